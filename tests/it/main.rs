//! The integration tests, as one test binary: one module per area, all sharing
//! `support`. One binary links once, where a binary per file linked the proxy and
//! its dependencies once per file. The tests run side by side in threads of this
//! one process, so none of them may rely on the process being its own: every
//! listener is on port 0, every store in a directory or schema of its own, and
//! nothing sets environment variables or the current directory. The one exception
//! is `tests/limiter_memory.rs`, a binary of its own because it measures the
//! resident memory of its process.

mod support;

mod agent_bodies;
mod anonymous_budget;
mod audience;
mod auth;
mod auth_md_text;
mod authorization_code;
mod browser;
mod claim_user_code;
mod claims_signed_in;
mod cli;
mod cli_store;
mod client_metadata_documents;
mod config_errors;
mod deploy_manifests;
mod discovery;
mod durability;
mod example_global;
mod faults;
mod faults_dependencies;
mod forward;
mod global_limits;
mod global_limits_backends;
mod global_limits_faults;
mod hostile_http;
mod identity;
mod image;
mod inject;
mod injector;
mod interactive_clients;
mod key_names;
mod layers;
mod lifecycle_endpoints;
mod limiter;
mod login;
mod login_config;
mod operations;
mod operator_page;
mod payments;
mod pickup;
mod postgres_store;
mod postgres_tls;
mod rate_limits;
mod replicas_interactive;
mod request_limits;
mod secret_hygiene;
mod secret_hygiene_interactive;
mod seeds;
mod self_claim;
mod served_documents;
mod store_conformance;
mod store_grants;
mod third_party_clients;
mod tls;
mod token_endpoint;
mod trusted_issuers;
mod verified_email;
mod x402_client;
