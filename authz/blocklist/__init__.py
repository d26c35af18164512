"""Where the emergency block list comes from: a file (the GitOps form) and the shared store
(the fast path, written by `mtls-authz block`). They build `authz.core.blocks` lists; the
service merges them and keeps the core's holder current."""
