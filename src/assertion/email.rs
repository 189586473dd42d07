//! `verified_email` identity assertions: an OpenID Connect `id_token` (OpenID Connect
//! Core 1.0 §2, §3.1.3.7) from a trusted issuer configured with `verified_email`,
//! naming a person by an e-mail address the issuer has verified.
//!
//! The rules are the ID-JAG's where they can be (exact issuer match before any key
//! is looked at; the algorithm from the issuer's key, never HMAC or `none`), and an
//! OpenID Connect client's otherwise: `aud` must be the client id this API has at
//! the issuer (`verified_email.client_id`), and `azp`, when present or when `aud`
//! names several clients, must be it too. `typ` may be `JWT` or absent: an ID-JAG or
//! an access token (`at+jwt`) is refused, so no other kind of token passes as an
//! `id_token`. An `id_token` is accepted for `max_age` after its `iat` at most;
//! `email_verified` must be true and the address's domain one of `email_domains`
//! when those are listed. Its replay id is its `jti`, or a digest of the token when
//! it has none.

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::{
    AssertionError, AssertionKind, AssertionVerifier, LEEWAY, Peek, VerifiedAssertion, key,
};

#[derive(Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    azp: Option<String>,
    jti: Option<String>,
    exp: i64,
    iat: i64,
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
}

impl AssertionVerifier {
    /// Verifies a `verified_email` `id_token` at unix time `now`.
    pub(super) async fn verify_id_token(
        &self,
        jwt: &str,
        now: i64,
    ) -> Result<VerifiedAssertion, AssertionError> {
        let header =
            jsonwebtoken::decode_header(jwt).map_err(|_| AssertionError::IdTokenMalformed)?;
        match header
            .typ
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("jwt") => {}
            Some(_) => return Err(AssertionError::IdTokenWrongType),
        }
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(AssertionError::UnsupportedAlgorithm);
        }
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(jwt)
            .map_err(|_| AssertionError::IdTokenMalformed)?;
        let iss = peek.iss.ok_or(AssertionError::IdTokenMalformed)?;
        let (issuer, settings) = self
            .issuers
            .iter()
            .filter(|i| i.settings.issuer == iss)
            .find_map(|i| i.settings.verified_email.as_ref().map(|v| (i, v)))
            .ok_or(AssertionError::UntrustedIssuer)?;
        let key = key(issuer, header.kid.as_deref()).await?;
        if key.algorithm != header.alg {
            return Err(AssertionError::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_audience(&[&settings.client_id]);
        validation.set_issuer(&[&issuer.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<IdClaims>(jwt, &key.key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => AssertionError::InvalidSignature,
                    K::ExpiredSignature => AssertionError::Expired,
                    K::ImmatureSignature => AssertionError::NotYetValid,
                    K::InvalidAudience => AssertionError::IdTokenAudience,
                    K::InvalidIssuer => AssertionError::UntrustedIssuer,
                    K::InvalidAlgorithm | K::UnsupportedAlgorithm => {
                        AssertionError::UnsupportedAlgorithm
                    }
                    _ => AssertionError::IdTokenMalformed,
                }
            })?
            .claims;
        // OpenID Connect Core §3.1.3.7: with several audiences, `azp` names the
        // client the token was issued to; when present it must be this API's.
        let audiences = match &claims.aud {
            serde_json::Value::Array(list) => list.len(),
            _ => 1,
        };
        if claims.azp.as_deref() != Some(settings.client_id.as_str())
            && (claims.azp.is_some() || audiences > 1)
        {
            return Err(AssertionError::IdTokenAudience);
        }
        let leeway = i64::try_from(LEEWAY).unwrap_or(60);
        if claims.exp + leeway <= now {
            return Err(AssertionError::Expired);
        }
        if claims.iat > now + leeway {
            return Err(AssertionError::NotYetValid);
        }
        let max_age = i64::try_from(settings.max_age.as_secs()).unwrap_or(i64::MAX / 4);
        let accepted_until = claims.exp.min(claims.iat.saturating_add(max_age));
        if accepted_until + leeway <= now {
            return Err(AssertionError::IdTokenTooOld);
        }
        let verified = match &claims.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            Some(_) | None => false,
        };
        let email = claims.email.ok_or(AssertionError::IdTokenMalformed)?;
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(AssertionError::IdTokenMalformed);
        };
        if local.is_empty() || domain.is_empty() || email.len() > 320 {
            return Err(AssertionError::IdTokenMalformed);
        }
        if !verified {
            return Err(AssertionError::EmailNotVerified);
        }
        let domain = domain.to_ascii_lowercase();
        if !settings.email_domains.is_empty() && !settings.email_domains.contains(&domain) {
            return Err(AssertionError::EmailDomainNotAllowed);
        }
        let jti = match claims.jti {
            Some(jti) if !jti.is_empty() => jti,
            Some(_) | None => format!("id_token:{}", blake3::hash(jwt.as_bytes()).to_hex()),
        };
        Ok(VerifiedAssertion {
            kind: AssertionKind::VerifiedEmail,
            issuer: claims.iss,
            subject: claims.sub,
            jti,
            expires_at: accepted_until,
            issued_at: claims.iat,
            client_id: None,
            email: Some(format!("{local}@{domain}")),
            scopes: Vec::new(),
        })
    }
}
