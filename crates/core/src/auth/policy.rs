//! What a password account's email and password must be. Emails: one `@`, a dotted domain, no
//! control characters or spaces, at most 254 bytes (RFC 5321's path limit), compared in lower
//! case. Passwords: 8 to 128 characters, not the email or a part of it, and not guessable:
//! `zxcvbn` (Dropbox's strength estimator: common-password lists, dictionaries, keyboard walks,
//! dates, repeats) must score it at least `min_score` (0 to 4; 2 by default, "safe from a
//! throttled online attack", which login throttling makes the attack that remains).

use crate::auth::AuthError;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;
const MAX_EMAIL_BYTES: usize = 254;
const MAX_LOCAL_BYTES: usize = 64;
/// The strength estimate reads at most this many characters: its matching grows quickly with
/// the length, and a password whose first 64 characters are strong is strong.
const ESTIMATED_CHARS: usize = 64;

/// The email as it is stored and compared: trimmed, lower case, checked.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let invalid = |why: &str| AuthError::InvalidEmail(why.to_owned());
    if email.len() > MAX_EMAIL_BYTES {
        return Err(invalid("it is over 254 bytes"));
    }
    if email.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("it holds a space or a control character"));
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("it must have exactly one @"));
    };
    if local.is_empty() || local.len() > MAX_LOCAL_BYTES {
        return Err(invalid("the part before @ must be 1 to 64 bytes"));
    }
    if local.chars().any(|c| "<>()[]\\,;:\"".contains(c)) {
        return Err(invalid(
            "the part before @ holds a character that needs quoting",
        ));
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    if !domain.contains('.') || !labels_ok {
        return Err(invalid(
            "the domain must be names joined by dots, as in example.com",
        ));
    }
    Ok(email)
}

/// The account an email names, for counting its failed logins: its normalized form, or (for
/// text that is not an email) the text trimmed and in lower case, so that no spelling of one
/// address escapes the count.
pub fn account_of(email: &str) -> String {
    normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase())
}

/// Checks a new password for the account `email` (already normalized).
pub fn check_password(password: &str, email: &str, min_score: u8) -> Result<(), AuthError> {
    let weak = |why: String| AuthError::WeakPassword(why);
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(weak(format!(
            "it must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(weak(format!(
            "it must be at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let lowered = password.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if lowered == email || (local.len() >= 4 && lowered.contains(local)) {
        return Err(weak("it must not be the email or contain its name".into()));
    }
    let estimated: String = password.chars().take(ESTIMATED_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&estimated, &[email, local]);
    if u8::from(estimate.score()) < min_score {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        return Err(weak(format!("it is too easy to guess{hint}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_have_one_at_a_dotted_domain_and_no_control_characters() {
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for ok in ["a@b.co", "first.last+tag@mail.example.org", "名@例え.jp"] {
            assert!(normalize_email(ok).is_ok(), "{ok}");
        }
        let long = format!("{}@x.com", "a".repeat(250));
        for bad in [
            "a@@x.com",
            "a@b@x.com",
            "ax.com",
            "@x.com",
            "a@x",
            "a@.x.com",
            "a@x..com",
            "a@x.com.",
            "a@-x.com",
            "a@x_y.com",
            "a\0b@x.com",
            "a b@x.com",
            "a\u{7}@x.com",
            "\"a\"@x.com",
            long.as_str(),
        ] {
            assert!(
                matches!(normalize_email(bad), Err(AuthError::InvalidEmail(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn weak_passwords_are_refused_and_strong_ones_taken() {
        let email = "ann.lee@example.com";
        for weak in [
            "short",
            "password",
            "12345678",
            "        ",
            "qwertyuiop",
            "ann.lee@example.com",
            "ANN.LEE@EXAMPLE.COM",
            "ann.lee1234",
            "iloveyou2020",
        ] {
            assert!(
                matches!(
                    check_password(weak, email, 2),
                    Err(AuthError::WeakPassword(_))
                ),
                "{weak:?} was taken"
            );
        }
        for strong in [
            "correct horse battery staple",
            "mJ7#vQ2!xL9p",
            "blue-kettle-91-marsh",
            // What the SDK's tests and the todo template's end-to-end test sign up with.
            "correct horse battery",
            "a good long password",
        ] {
            check_password(strong, email, 2).unwrap();
        }
        assert!(
            check_password(&"ab1!".repeat(33), email, 2).is_err(),
            "over 128"
        );
        check_password(&"x7Qz!pR2".repeat(16), email, 2).unwrap();
        // Score 0 takes anything long enough that is not the email.
        check_password("12345678", email, 0).unwrap();
    }
}
