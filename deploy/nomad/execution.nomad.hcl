# conveyor-execution: admission, ready -> queued.
variable "registry" {
  type        = string
  default     = "localhost"
  description = "Registry (and path) of the Conveyor images; set your site's value here once and commit it."
}

variable "image_tag" {
  type        = string
  default     = "dev"
  description = "Image tag = the git hash the image was built from. Patch: nomad job run -var image_tag=<git hash> deploy/nomad/execution.nomad.hcl"
}

variable "namespace" {
  type        = string
  default     = "conveyor"
  description = "Nomad namespace of every Conveyor job; its Nomad Variable nomad/jobs holds database_url and kafka_brokers."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

job "conveyor-execution" {
  namespace   = var.namespace
  type        = "service"
  datacenters = var.datacenters

  # One allocation at a time; a new version must pass its checks, or Nomad
  # goes back to the last good one by itself.
  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "3m"
    progress_deadline = "5m"
    auto_revert       = true
  }

  group "execution" {
    count = 1

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      name     = "conveyor-execution"
      port     = "http"
      provider = "nomad"

      # Ready: database and broker reachable.
      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }

      # Alive: restarted after three failures in a row.
      check {
        name     = "alive"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    # A service exits 1 while the database is away or not migrated yet.
    restart {
      attempts = 10
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    task "execution" {
      driver = "docker"
      user   = "10001"

      # SIGTERM drains within CONVEYOR_SHUTDOWN_GRACE_MS (30 s); 45 s before
      # SIGKILL. Nomad clients cap this at their max_kill_timeout (30 s by
      # default): raise it on the clients (deploy/nomad/README.md).
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image           = "${var.registry}/conveyor-execution:${var.image_tag}"
        ports           = ["http"]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]

        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 268435456
          }
        }
        mount {
          type     = "tmpfs"
          target   = "/var/lib/conveyor"
          readonly = false
          tmpfs_options {
            size = 1073741824
          }
        }
      }

      env {
        CONVEYOR_DATABASE_URL_FILE = "${NOMAD_SECRETS_DIR}/database-url"
        # 0.0.0.0: in its container the service must listen on the
        # container's address for the port mapping and the checks.
        CONVEYOR_HTTP_HOST         = "0.0.0.0"
        CONVEYOR_HTTP_PORT         = "8080"
        CONVEYOR_LOG_FORMAT        = "json"
        CONVEYOR_DATA_DIR          = "/var/lib/conveyor"
        CONVEYOR_SHUTDOWN_GRACE_MS = "30000"
        CONVEYOR_INSTANCE_ID       = "conveyor-execution-${NOMAD_SHORT_ALLOC_ID}"
        CONVEYOR_IMAGE_TAG         = "${var.image_tag}"
      }

      # Its own database login (conveyor_execution_login, member of conveyor_execution):
      # the Variable nomad/jobs/conveyor-execution, which only this job can read, rendered
      # as a file (CONVEYOR_DATABASE_URL_FILE), not into the environment.
      template {
        destination = "secrets/database-url"
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-execution" }}{{ .database_url }}{{ end }}
        EOT
      }

      # Secrets never sit in this file. The broker list comes from the Nomad
      # Variable nomad/jobs of the namespace, which only the jobs of that
      # namespace can read; the database login from the job's own (above).
      template {
        destination = "secrets/conveyor.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs" }}
          CONVEYOR_KAFKA_BROKERS={{ .kafka_brokers }}
          {{- end }}
        EOT
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
