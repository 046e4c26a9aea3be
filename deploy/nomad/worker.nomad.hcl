# conveyor-worker: a parameterized batch job that conveyor-workerpool (the
# `nomad` backend, workerpool.nomad.hcl) dispatches once per worker
# (POST /v1/job/conveyor-worker/dispatch with Meta worker_name and pool).
# Registering it starts nothing:
#   nomad job run deploy/nomad/worker.nomad.hcl
# A worker leaves by draining and exiting 0; the pool stops (deregisters)
# only the dispatched jobs of lost workers. New dispatches use the image of
# the registered version of this job, so a new image_tag reaches new workers
# only; running ones keep theirs until they drain.
variable "registry" {
  type        = string
  default     = "localhost"
  description = "Registry (and path) of the Conveyor images; set your site's value here once and commit it."
}

variable "image_tag" {
  type        = string
  default     = "dev"
  description = "Image tag = the git hash the image was built from. Patch: nomad job run -var image_tag=<git hash> deploy/nomad/worker.nomad.hcl"
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

job "conveyor-worker" {
  namespace   = var.namespace
  type        = "batch"
  datacenters = var.datacenters

  parameterized {
    meta_required = ["worker_name", "pool"]
    payload       = "forbidden"
  }

  group "worker" {
    count = 1

    # Never restarted in place nor rescheduled: the pool sees the worker gone
    # (its heartbeat stops, its job ends) and dispatches a replacement if
    # demand needs one. A restarted worker would come back under the same
    # name as a second incarnation.
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    network {
      port "http" {
        to = 8080
      }
    }

    # Job logs and outputs, read by publication and monitor.
    volume "conveyor-data" {
      type   = "host"
      source = "conveyor-data"
    }

    task "worker" {
      driver = "docker"
      user   = "10001"

      # A draining worker finishes or requeues its jobs within
      # CONVEYOR_SHUTDOWN_GRACE_MS (30 s) after SIGTERM.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      config {
        image           = "${var.registry}/conveyor-worker:${var.image_tag}"
        ports           = ["http"]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]

        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 1073741824
          }
        }
      }

      volume_mount {
        volume      = "conveyor-data"
        destination = "/var/lib/conveyor"
      }

      env {
        CONVEYOR_DATABASE_URL_FILE = "${NOMAD_SECRETS_DIR}/database-url"
        CONVEYOR_WORKER_NAME       = "${NOMAD_META_worker_name}"
        CONVEYOR_INSTANCE_ID       = "${NOMAD_META_worker_name}"
        CONVEYOR_WORKER_POOL       = "${NOMAD_META_pool}"
        # 0.0.0.0: the worker's admin port is reached through the port mapping.
        CONVEYOR_HTTP_HOST         = "0.0.0.0"
        CONVEYOR_HTTP_PORT         = "8080"
        CONVEYOR_LOG_FORMAT        = "json"
        CONVEYOR_DATA_DIR          = "/var/lib/conveyor"
        CONVEYOR_SHUTDOWN_GRACE_MS = "30000"
        CONVEYOR_IMAGE_TAG         = "${var.image_tag}"
      }

      # Its own database login (conveyor_worker_login, member of conveyor_worker):
      # the Variable nomad/jobs/conveyor-worker, which only this job can read, rendered
      # as a file (CONVEYOR_DATABASE_URL_FILE), not into the environment.
      template {
        destination = "secrets/database-url"
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-worker" }}{{ .database_url }}{{ end }}
        EOT
      }

      # A dispatched job's workload identity is its parent's
      # (conveyor-worker): it reads nomad/jobs like every job of the
      # namespace, never the pool's token at nomad/jobs/conveyor-workerpool.
      template {
        destination = "secrets/conveyor.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs" }}
          CONVEYOR_KAFKA_BROKERS={{ .kafka_brokers }}
          {{- end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
