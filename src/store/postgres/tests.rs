//! Unit tests of the PostgreSQL store that need no server.

use super::*;

#[test]
fn a_bad_url_is_refused_without_echoing_it() {
    let error = PostgresStore::new("postgres://u:s3cret@host:notaport/db", "authmd")
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        error,
        StoreError::Unavailable("the PostgreSQL URL is not valid".into())
    );
}

#[test]
fn debug_never_shows_the_url() {
    let store = PostgresStore::new("postgres://u:s3cret@127.0.0.1:1/x", "authmd").unwrap();
    let text = format!("{store:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("authmd"), "{text}");
}

#[test]
fn identifiers_are_quoted() {
    assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
}
