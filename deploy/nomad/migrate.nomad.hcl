# conveyor-migrate: `conveyor db init` (migration tables, idempotent) then
# `conveyor db migrate`, as compose.yaml's `migrate`. Run it and wait for it
# to complete before the services (deploy/nomad/README.md):
#   nomad job run -var image_tag=<git hash> deploy/nomad/migrate.nomad.hcl
# Nomad runs a batch job again only when its definition changes (a new
# image_tag); to run the same tag again: nomad job stop -purge conveyor-migrate.
variable "registry" {
  type        = string
  default     = "localhost"
  description = "Registry (and path) of the Conveyor images; set your site's value here once and commit it."
}

variable "image_tag" {
  type        = string
  default     = "dev"
  description = "Image tag = the git hash the image was built from. Patch: nomad job run -var image_tag=<git hash> deploy/nomad/migrate.nomad.hcl"
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

job "conveyor-migrate" {
  namespace   = var.namespace
  type        = "batch"
  datacenters = var.datacenters

  group "migrate" {
    count = 1

    # The database may still be starting: a few tries, then the job fails
    # and says why in its logs (nomad alloc logs).
    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "migrate" {
      driver = "docker"
      user   = "10001"

      kill_timeout = "45s"

      config {
        image           = "${var.registry}/conveyor:${var.image_tag}"
        # As the owner: migrations, then one login per service, member of its
        # role, with the password of the Variable's <service>_password
        # (idempotent: a re-run sets the same passwords again).
        entrypoint = ["/bin/sh", "-c", "conveyor db init && conveyor db migrate && for s in creation configuration execution publication monitor workerpool worker; do conveyor db grant-login \"conveyor_$${s}_login\" --role \"conveyor_$s\" --password-file \"$NOMAD_SECRETS_DIR/$s-password\" || exit 1; done"]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]

        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 67108864
          }
        }
      }

      env {
        CONVEYOR_DATABASE_URL_FILE = "${NOMAD_SECRETS_DIR}/database-url"
        CONVEYOR_LOG_FORMAT        = "json"
      }

      # The owner's URL and each service login's password: the Variable
      # nomad/jobs/conveyor-migrate, which only this job can read
      # (deploy/nomad/README.md), rendered as files, never into env.
      template {
        destination = "secrets/database-url"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .database_url }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/creation-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .creation_password }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/configuration-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .configuration_password }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/execution-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .execution_password }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/publication-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .publication_password }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/monitor-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .monitor_password }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/workerpool-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .workerpool_password }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/worker-password"
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/conveyor-migrate" }}{{ .worker_password }}{{ end }}
        EOT
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
