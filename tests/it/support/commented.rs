//! Turning on a commented-out block of a shipped file (the example config, the
//! Kubernetes manifests) exactly as its comment tells a reader to: uncomment it.

/// `text` with its commented-out block `key` uncommented: the line `# key:` (at any
/// indentation) and the lines right under it that continue it (`#   ` at the same
/// indentation, i.e. `# ` followed by the block's own indentation). A line nested
/// one comment deeper (`#   # ca_file: ...`) stays a comment. Panics when there is
/// no such block, or more than one.
pub fn uncomment(text: &str, key: &str) -> String {
    let opening = format!("# {key}:");
    let mut out = String::with_capacity(text.len());
    let mut inside: Option<&str> = None;
    let mut found = 0;
    for line in text.lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let continues = inside.is_some_and(|pad| {
            line.strip_prefix(pad)
                .is_some_and(|rest| rest.starts_with("#   "))
        });
        if continues {
            let pad = inside.unwrap_or_default();
            out.push_str(pad);
            out.push_str(&line[pad.len() + 2..]);
        } else if body == opening || body.starts_with(&format!("{opening} ")) {
            found += 1;
            inside = Some(indent);
            out.push_str(indent);
            out.push_str(&body[2..]);
        } else {
            inside = None;
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(
        found, 1,
        "`{opening}` should open exactly one commented block"
    );
    out
}
