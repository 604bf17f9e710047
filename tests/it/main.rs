//! pillion's integration tests, built as one test binary (ripgrep's layout): one module per
//! capability, and the helpers in [`common`] compile and link once instead of once per file.
//!
//! Run one area with its module path: `cargo test --test it vault_pki::`, or one test with
//! its name: `cargo test --test it -- --exact nginx::nginx_serves_the_rotated_certificate_after_pillion_signals_its_master`.
//!
//! Every test here shares one process with all the others and runs in parallel threads, so a
//! test must not change what the process shares: no `std::env::set_var`, no
//! `set_current_dir`, no signal handlers, no process-wide limits (set them on the child
//! process, as `prlimit` and `umask` do in `admin_endpoint` and `init_local_ca`). Servers
//! started once per binary ([`common::openbao::OpenBao::shared`]) are shared by every area:
//! each test uses its own roles, paths and names. A test whose pillion finds an application
//! by a name that other tests also run holds a lock for it ([`common::nginx_by_name`]).

mod common;

mod admin_endpoint;
mod bad_input;
mod cert_manager;
mod config_reload;
mod consistency;
mod deploy_manifests;
mod envoy_sds;
mod files_source;
mod init_local_ca;
mod inject;
mod java_keystores;
mod json_logs;
mod kubernetes_csr;
mod metrics;
mod migration;
mod nginx;
mod no_secrets_in_logs;
mod recovery;
mod reload_targets;
mod rotation;
mod shared_pid_namespace;
mod templates;
mod vault_auth;
mod vault_dynamic;
mod vault_kubernetes_auth;
mod vault_kv;
mod vault_namespace;
mod vault_nginx;
mod vault_outage;
mod vault_pki;
mod vault_token_sink;
mod workload_api;
