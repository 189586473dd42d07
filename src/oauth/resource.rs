//! RFC 8707 resource indicators: the `resource` of an authorization or token
//! request, normalised and held against the resources this proxy serves (one per
//! public origin and per `discovery.resources` prefix).

use url::Url;

/// The resource `value` names, among `audiences`, once normalised: scheme and host
/// in lower case, the default port dropped, no trailing slash. `None` when it is
/// not an absolute URI without a fragment, or names no resource served here.
#[must_use]
pub fn find<'a>(value: &str, audiences: &'a [String]) -> Option<&'a String> {
    let url = Url::parse(value).ok()?;
    if url.fragment().is_some() || url.cannot_be_a_base() {
        return None;
    }
    let text: String = url.into();
    let normalised = text.strip_suffix('/').unwrap_or(&text);
    audiences.iter().find(|a| *a == normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_normalised_before_they_are_compared() {
        let served = vec![
            "https://api.example.com".to_owned(),
            "https://api.example.com/mcp".to_owned(),
        ];
        for same in [
            "https://api.example.com",
            "https://api.example.com/",
            "HTTPS://API.Example.com:443/",
        ] {
            assert_eq!(find(same, &served), Some(&served[0]), "{same}");
        }
        assert_eq!(
            find("https://api.example.com/mcp/", &served),
            Some(&served[1])
        );
        for other in [
            "https://api.example.com/mcp#x",
            "https://api.example.com:8443/mcp",
            "https://evil.example.com/mcp",
            "https://api.example.com/mcp/tools",
            "api.example.com/mcp",
            "",
        ] {
            assert_eq!(find(other, &served), None, "{other}");
        }
    }
}
