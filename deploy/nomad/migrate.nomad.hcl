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
        entrypoint      = ["/bin/sh", "-c", "conveyor db init && exec conveyor db migrate"]
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
        CONVEYOR_LOG_FORMAT = "json"
      }

      template {
        destination = "secrets/conveyor.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs" }}
          CONVEYOR_DATABASE_URL={{ .database_url }}
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
