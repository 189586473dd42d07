//! The sign-in pages' content: the chooser (a button per provider, a form per
//! static provider) and the page of a signed-in person.

use maud::{Markup, html};

use super::Person;
use super::flow::with_query;

/// A provider as the sign-in page shows it.
pub(crate) struct Choice<'a> {
    pub(crate) id: &'a str,
    pub(crate) display_name: &'a str,
    /// A username and password form rather than a button.
    pub(crate) password: bool,
}

/// What the sign-in page needs.
pub(crate) struct SignIn<'a> {
    pub(crate) login_path: &'a str,
    pub(crate) choices: Vec<Choice<'a>>,
    pub(crate) return_to: Option<&'a str>,
    pub(crate) csrf: &'a str,
    /// Shown above the forms (a wrong password).
    pub(crate) error: Option<&'a str>,
    /// The username typed last, kept in its field.
    pub(crate) username: Option<&'a str>,
    /// Who is signed in already.
    pub(crate) signed_in: Option<&'a Person>,
}

/// The chooser.
pub(crate) fn sign_in(page: &SignIn<'_>) -> Markup {
    html! {
        @if let Some(person) = page.signed_in {
            p.muted { "You are signed in as " strong { (shown_name(person)) } ". Signing in again replaces that sign-in." }
        }
        @if let Some(error) = page.error {
            p.error role="alert" { (error) }
        }
        @for choice in &page.choices {
            @if choice.password {
                form method="post" action=(page.login_path) {
                    h2 { (choice.display_name) }
                    input type="hidden" name="provider" value=(choice.id);
                    input type="hidden" name="csrf" value=(page.csrf);
                    @if let Some(return_to) = page.return_to {
                        input type="hidden" name="return_to" value=(return_to);
                    }
                    label for={ "username-" (choice.id) } { "Username" }
                    input id={ "username-" (choice.id) } name="username" autocomplete="username"
                        required autocapitalize="none" spellcheck="false" value=(page.username.unwrap_or_default());
                    label for={ "password-" (choice.id) } { "Password" }
                    input id={ "password-" (choice.id) } name="password" type="password"
                        autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
            } @else {
                a.button.secondary href=(provider_link(page.login_path, choice.id, page.return_to)) {
                    "Continue with " (choice.display_name)
                }
            }
        }
    }
}

/// The page of a signed-in person who came without a place to return to.
pub(crate) fn signed_in(person: &Person, provider: &str) -> Markup {
    html! {
        p { "You are signed in as " strong { (shown_name(person)) } " through " (provider) "." }
        @if let Some(email) = &person.email {
            p.muted { (email) }
        }
        p.muted { "You can close this page and go back to the application." }
    }
}

fn shown_name(person: &Person) -> &str {
    person.name.as_deref().unwrap_or(&person.subject)
}

/// The link that starts a sign-in through provider `id`.
pub(crate) fn provider_link(login_path: &str, id: &str, return_to: Option<&str>) -> String {
    match return_to {
        Some(return_to) => with_query(login_path, &[("provider", id), ("return_to", return_to)]),
        None => with_query(login_path, &[("provider", id)]),
    }
}
