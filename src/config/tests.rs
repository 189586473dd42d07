//! Tests of loading whole config documents: what loads, and every problem reported
//! with its place, its message and nothing secret in it.

use super::*;
use crate::tier::TierId;

const GOOD: &str = r#"
listen: 127.0.0.1:8080
public_url: https://api.example.com/
upstream:
  url: builtin:echo
credentials:
  headers:
    - name: X-Agent-Key
      anonymous: true
  key_prefixes: [ak_live]
scopes:
  offers:read: Read public offers
  offers:write: Create and update own offers
  admin:*: Everything under admin
  admin:users: Manage users
tiers:
  - name: anonymous
    scopes: [offers:read]
  - name: free
keys:
  - id: k1
    hash: blake3:0000000000000000000000000000000000000000000000000000000000000001
    scopes: [offers:read, offers:write]
routes:
  - path: /api/v1/offers
    methods: [GET]
    access: anonymous
    scopes: [offers:read]
  - path: /api/v1/offers/{id}
    methods: [PUT]
    scopes: [offers:write]
"#;

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_str(text, "test.yaml", &Overrides::default(), &|name| {
        (name == "SECRET_HASH").then(|| "hunter2-not-a-hash".to_owned())
    })
}

#[test]
fn a_good_config_loads() {
    let config = load(GOOD).unwrap();
    assert_eq!(config.public_url, "https://api.example.com");
    assert_eq!(config.route_count(), 2);
    assert_eq!(config.tiers.all().len(), 2);
    assert_eq!(config.keys.len(), 1);
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"listen: nowhere
upstream:
  url: ftp://x
scopes:
  offers:read: Read
  Bad Scope: no
routes:
  - path: /a
    scopes: [ofers:read]
  - path: /b
    methods: [FETCH]
    acess: public
  - path: /c/{id
keys:
  - id: k
    hash: nope
  - id: k2
    hash: ${SECRET_HASH}
  - id: k3
    hash: ${MISSING_VAR}
tires: []
"#;
    let errors = load(text).unwrap_err();
    let rendered = errors.to_string();
    let expect = [
        "test.yaml:1:1: listen: `nowhere` is not an address",
        "test.yaml:3:3: upstream.url: `ftp://x` is not `builtin:echo`",
        "test.yaml:6:3: scopes.Bad Scope: `Bad Scope` is not a valid scope name",
        "test.yaml:9:14: routes[0].scopes[0]: unknown scope `ofers:read`; did you mean `offers:read`?",
        "routes[1].acess: unknown field `acess`",
        "routes[2].path: `/c/{id` ",
        "test.yaml:16:5: keys[0].hash: not a BLAKE3 hash",
        "test.yaml:18:5: keys[1].hash: not a BLAKE3 hash",
        "keys[2].hash: environment variable `MISSING_VAR` is not set",
        "tires: unknown section `tires`; did you mean `tiers`?",
    ];
    for line in expect {
        assert!(rendered.contains(line), "missing {line:?} in\n{rendered}");
    }
    assert!(
        !rendered.contains("hunter2"),
        "a secret leaked:\n{rendered}"
    );
}

#[test]
fn route_conflicts_are_config_errors() {
    let text = r#"upstream: {url: builtin:echo}
routes:
  - path: /{x}/b
  - path: /a/{y}
  - id: dup
    path: /a/{z}
"#;
    let rendered = load(text).unwrap_err().to_string();
    assert!(rendered.contains("both match `/a/b`"), "{rendered}");
    assert!(rendered.contains("repeats"), "{rendered}");
    assert!(
        rendered.contains("test.yaml:6:5: routes[2].path"),
        "{rendered}"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errors = load("upstream: [unclosed\n").unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert!(errors.errors[0].position.is_some());
    assert!(errors.to_string().contains("not valid YAML"), "{errors}");
}

#[test]
fn env_substitution() {
    let text = "upstream:\n  url: ${UP}\npublic_url: http://$${literal}\n";
    let err = Config::from_yaml_str(text, "t", &Overrides::default(), &|n| {
        (n == "UP").then(|| "http://127.0.0.1:3000".to_owned())
    })
    .unwrap_err();
    // `$${` is a literal `${`, which is then not a valid URL; the upstream resolved.
    let rendered = err.to_string();
    assert!(
        rendered.contains("public_url: `http://${literal}`"),
        "{rendered}"
    );
    assert!(!rendered.contains("upstream"), "{rendered}");
}

#[test]
fn overrides_win() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:1".parse().unwrap()),
        admin_listen: None,
        public_url: Some("http://localhost:1".into()),
        data_dir: None,
        upstream: Some("http://127.0.0.1:7".into()),
    };
    let config = Config::from_yaml_str(GOOD, "t", &overrides, &|_| None).unwrap();
    assert!(matches!(
        &config.upstream.target,
        crate::config::UpstreamTarget::Http { authority, .. } if authority.as_str() == "127.0.0.1:7"
    ));
    assert_eq!(config.listen.port(), 1);
    assert_eq!(config.public_url, "http://localhost:1");
}

#[test]
fn anonymous_key_creation_needs_an_anonymous_header_and_a_keyed_tier() {
    let text = r#"upstream: {url: builtin:echo}
tiers:
  - name: anonymous
  - name: free
key_management:
  anonymous_tier: anonymous
"#;
    let rendered = load(text).unwrap_err().to_string();
    assert!(
        rendered.contains("key_management.anonymous_tier: anonymous agents are told apart"),
        "{rendered}"
    );
    let keyless = GOOD.to_owned() + "key_management: {anonymous_tier: anonymous}\n";
    let rendered = load(&keyless).unwrap_err().to_string();
    assert!(
        rendered.contains("key_management.anonymous_tier: a key cannot be in the `anonymous` tier"),
        "{rendered}"
    );
    let good = GOOD.to_owned() + "key_management: {anonymous_tier: free}\n";
    assert_eq!(
        load(&good).unwrap().lifecycle.keys.anonymous_tier,
        Some(TierId(1))
    );
}

#[test]
fn request_limits_take_sizes_and_name_a_bad_one() {
    let good =
        GOOD.to_owned() + "server: {max_uri: 2KiB, max_body: 1MiB, max_header_bytes: 4096}\n";
    let limits = load(&good).unwrap().server.request_limits;
    assert_eq!(
        (limits.uri, limits.body, limits.header_bytes),
        (2048, 1 << 20, 4096)
    );
    let bad = GOOD.to_owned() + "server: {max_body: 10 MB}\n";
    let rendered = load(&bad).unwrap_err().to_string();
    assert!(
        rendered.contains("server.max_body: `10 MB` is not a size"),
        "{rendered}"
    );
}

#[test]
fn a_value_from_the_environment_is_never_echoed_in_another_fields_error() {
    // Found by the `config` fuzz target: a route conflict names the other route's id,
    // and "did you mean" suggests another tier's name.
    let text = "upstream: {url: builtin:echo}\ntiers:\n  - name: anonymous\n  - name: ${TIER}\nroutes:\n  - id: ${ROUTE_ID}\n    path: /a\n  - path: /a\n  - path: /b\n    min_tier: hunter3-db-passwordd\n";
    let env = |name: &str| match name {
        "ROUTE_ID" => Some("hunter2-db-password".to_owned()),
        "TIER" => Some("hunter3-db-password".to_owned()),
        _ => None,
    };
    let rendered = Config::from_yaml_str(text, "test.yaml", &Overrides::default(), &env)
        .unwrap_err()
        .to_string();
    assert!(rendered.contains("repeats"), "{rendered}");
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(!rendered.contains("hunter3-db-password`"), "{rendered}");
}

#[test]
fn a_short_value_from_the_environment_does_not_garble_other_messages() {
    let text = "upstream: {url: builtin:echo}\nserver: {worker_threads: \"${WORKERS}\"}\nroutes:\n  - path: /a\n    methods: [FETCH2]\n";
    let env = |name: &str| (name == "WORKERS").then(|| "2".to_owned());
    let rendered = Config::from_yaml_str(text, "test.yaml", &Overrides::default(), &env)
        .unwrap_err()
        .to_string();
    assert!(rendered.contains("FETCH2"), "{rendered}");
}

#[test]
fn a_bad_value_from_the_environment_is_masked_wherever_it_is_quoted() {
    // Quoted by a deserializer (escaped, in double quotes), by our own messages (in
    // backticks), and as part of a longer value the rest of which is in the file.
    let text = "upstream:\n  url: http://${HOST}:3000/x\nserver:\n  max_connections: ${CONNS}\nstore:\n  kind: ${KIND}\n";
    let env = |name: &str| match name {
        "HOST" => Some("hunter2-host".to_owned()),
        "CONNS" => Some("hunter2\"quoted\\".to_owned()),
        "KIND" => Some("hunter2-kind".to_owned()),
        _ => None,
    };
    let rendered = Config::from_yaml_str(text, "test.yaml", &Overrides::default(), &env)
        .unwrap_err()
        .to_string();
    let expect = [
        "upstream.url: the value from the environment (not shown) is not `builtin:echo`",
        "server.max_connections: expected a whole number, 0 or more, found the value from the environment (not shown)",
        "store.kind: unknown variant the value from the environment (not shown), expected one of",
    ];
    for line in expect {
        assert!(rendered.contains(line), "missing {line:?} in\n{rendered}");
    }
    assert!(
        !rendered.contains("hunter2"),
        "a secret leaked:\n{rendered}"
    );
}

#[test]
fn durations_keep_to_their_range_and_defaults_are_inside_it() {
    let config = load(GOOD).unwrap();
    assert_eq!(
        config.upstream.connect_timeout,
        std::time::Duration::from_secs(5)
    );
    let bad = GOOD.to_owned() + "server: {watch_interval: 2d, shutdown_delay: 0s}\n";
    let rendered = load(&bad).unwrap_err().to_string();
    assert!(
        rendered.contains("server.watch_interval: `2d` is out of range: must be at most 1day"),
        "{rendered}"
    );
    assert!(!rendered.contains("shutdown_delay"), "{rendered}");
}

#[test]
fn an_unspecified_listen_address_is_published_as_localhost() {
    let url = |addr: &str| default_public_url(addr.parse().unwrap_or_else(|_| unreachable!()));
    assert_eq!(url("0.0.0.0:8080"), "http://localhost:8080");
    assert_eq!(url("[::]:9000"), "http://localhost:9000");
    assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080");
    assert_eq!(url("[::1]:8080"), "http://[::1]:8080");
}

#[test]
fn the_oauth_section_has_defaults_and_checks_each_declared_client() {
    let config = load(GOOD).unwrap();
    let interactive = &config.interactive;
    assert_eq!(interactive.code_ttl, std::time::Duration::from_secs(60));
    assert!(interactive.clients.is_empty());
    assert!(interactive.registration.enabled);

    let good = format!(
        "{GOOD}oauth:\n  clients:\n    - client_id: cli\n      redirect_uris: [http://127.0.0.1/cb, cursor://x/cb]\n      scopes: [offers:read]\n"
    );
    let config = load(&good).unwrap();
    let client = &config.interactive.clients[0];
    assert_eq!(client.client_id, "cli");
    assert_eq!(config.scopes.names(&client.scopes), "offers:read");
    assert!(client.secret_hash.is_none());

    let bad = format!(
        "{GOOD}oauth:\n  code_ttl: 1h\n  clients:\n    - client_id: cli\n      redirect_uris: [http://app.example.com/cb, javascript:x]\n      scopes: [offers:nope]\n      client_secret_hash: plain\n    - client_id: cli\n      redirect_uris: []\n    - redirect_uris: [https://a.example/cb]\n"
    );
    let errors = load(&bad).unwrap_err().to_string();
    for expected in [
        "oauth.code_ttl",
        "oauth.clients[0].redirect_uris[0]",
        "loopback",
        "oauth.clients[0].redirect_uris[1]",
        "oauth.clients[0].scopes[0]",
        "oauth.clients[0].client_secret_hash",
        "oauth.clients[1].redirect_uris",
        "oauth.clients[2].client_id",
    ] {
        assert!(
            errors.contains(expected),
            "{expected} missing from:\n{errors}"
        );
    }
}

#[test]
fn resources_no_route_is_under_are_left_out_and_the_others_keep_their_routes() {
    // `/mcp` has no route of its own (the catch-all is the API's as a whole), and
    // `/files/v2/x` none either (the `/files` route is not under it); `/files` has.
    let text = format!(
        "{GOOD}  - path: /files/{{*rest}}\n    scopes: [offers:read]\n  - path: /{{*rest}}\n    scopes: [offers:read]\n\
         discovery:\n  resources: [/mcp, /files, /files/v2/x]\n"
    );
    let config = load(&text).unwrap();
    assert_eq!(config.discovery.resources, ["/files"]);
    assert_eq!(
        config.resource_identifiers(),
        ["https://api.example.com", "https://api.example.com/files"]
    );
    // A route's resource is its position in that list.
    let files = config
        .policy
        .routes()
        .find(|r| r.path == "/files/{*rest}")
        .unwrap();
    assert_eq!(&*files.resources, [crate::tokens::ResourceId(1)]);
    let rest = config
        .policy
        .routes()
        .find(|r| r.path == "/{*rest}")
        .unwrap();
    assert_eq!(&*rest.resources, [crate::tokens::ResourceId(0)]);
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("test.yaml:"),
        "{:?}",
        config.warnings
    );
    assert!(config.warnings[0].contains("discovery.resources[0]: no route is under `/mcp`"));
    assert!(config.warnings[1].contains("discovery.resources[2]: no route is under `/files/v2/x`"));
}

#[test]
fn a_warning_never_echoes_a_value_from_the_environment() {
    let text = format!("{GOOD}discovery:\n  resources: [\"${{SECRET_HASH}}\"]\n");
    // Not a path: an error, masked.
    let error = load(&text).unwrap_err().to_string();
    assert!(!error.contains("hunter2"), "{error}");
    let text = format!("{GOOD}discovery:\n  resources: [\"/${{PREFIX}}\"]\n");
    let config = Config::from_yaml_str(&text, "test.yaml", &Overrides::default(), &|name| {
        (name == "PREFIX").then(|| "internal-mcp".to_owned())
    })
    .unwrap();
    assert!(config.discovery.resources.is_empty());
    assert_eq!(config.warnings.len(), 1);
    assert!(
        !config.warnings[0].contains("internal-mcp"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_card_is_served_only_when_its_endpoint_on_this_api_is_served() {
    let card = |endpoint: &str| {
        let text = format!(
            "{GOOD}discovery:\n  mcp_server_card:\n    transport: {{type: streamable-http, endpoint: \"{endpoint}\"}}\n"
        );
        load(&text).unwrap()
    };
    // A route serves it: as a path, or as a URL on the public origin.
    for endpoint in [
        "/api/v1/offers",
        "https://api.example.com/api/v1/offers?x=1",
    ] {
        let config = card(endpoint);
        assert!(config.discovery.mcp_server_card.is_some(), "{endpoint}");
        assert!(
            config.warnings.is_empty(),
            "{endpoint}: {:?}",
            config.warnings
        );
    }
    // Another host's endpoint is not this policy's to judge.
    let config = card("https://mcp.example.net/mcp");
    assert!(config.discovery.mcp_server_card.is_some());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // On this API, and no route serves it: no card, and a warning at its field.
    for endpoint in ["/mcp", "https://API.example.com:443/mcp"] {
        let config = card(endpoint);
        assert!(config.discovery.mcp_server_card.is_none(), "{endpoint}");
        assert_eq!(config.warnings.len(), 1, "{endpoint}");
        assert!(
            config.warnings[0]
                .contains("discovery.mcp_server_card.transport.endpoint: no route serves"),
            "{:?}",
            config.warnings
        );
    }
}

#[test]
fn a_claim_by_registration_id_alone_needs_no_identity_to_be_required() {
    let refused = load(&format!(
        "{GOOD}registration:\n  claim:\n    by_registration_id: true\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("registration.claim.by_registration_id")
            && refused.contains("require_identity_to_claim: false"),
        "{refused}"
    );
    let config = load(&format!(
        "{GOOD}registration:\n  require_identity_to_claim: false\n  claim:\n    by_registration_id: true\n"
    ))
    .unwrap();
    assert!(config.lifecycle.registration.claim.by_registration_id);
}
