# ACL policy of conveyor-workerpool's Nomad token (the `nomad` backend):
#   dispatch-job  POST   /v1/job/conveyor-worker/dispatch   start a worker
#   read-job      GET    /v1/job/<id>, /v1/job/<id>/allocations   follow a dispatched worker
#   list-jobs     GET    /v1/jobs?prefix=conveyor-worker/dispatch-   find the pool's workers
#   submit-job    DELETE /v1/job/<dispatched id>           stop a lost worker's job
# Nothing else: no node, agent or operator access, no variables, and only in
# Conveyor's own namespace. submit-job also allows registering jobs in that
# namespace, which is one more reason to give Conveyor a namespace of its own.
#   nomad acl policy apply -description "conveyor-workerpool" conveyor-workerpool deploy/nomad/acl/conveyor-workerpool.policy.hcl
#   nomad acl token create -name conveyor-workerpool -policy conveyor-workerpool -type client
namespace "conveyor" {
  capabilities = ["dispatch-job", "read-job", "list-jobs", "submit-job"]
}
