//! The password policy (API.md `PasswordPolicy`). It applies only to passwords that encrypt,
//! never to passwords that only read, so tightening it never locks anyone out of stored data.

use crate::error::{Result, VaultError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in characters (Unicode scalar values). Default 12.
    pub min_length: usize,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
    pub require_numbers: bool,
    /// A symbol is any character that is neither a letter, a digit nor whitespace.
    pub require_symbols: bool,
    /// Let the empty password through; nothing else changes.
    pub allow_empty: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 12,
            require_lowercase: false,
            require_uppercase: false,
            require_numbers: false,
            require_symbols: false,
            allow_empty: false,
        }
    }
}

impl PasswordPolicy {
    /// `PASSWORD_POLICY` naming every rule the password breaks.
    pub fn check(&self, password: &str) -> Result<()> {
        if password.is_empty() {
            return if self.allow_empty {
                Ok(())
            } else {
                Err(VaultError::PasswordPolicy(
                    "the password is empty (set passwordPolicy.allowEmpty to permit it)".into(),
                ))
            };
        }
        // Every broken rule, "; "-separated (built in place: a `join` of the parts was one more
        // instance of the standard library's, in the browser's download).
        let mut broken = String::new();
        let mut add = |rule: &str| {
            if !broken.is_empty() {
                broken.push_str("; ");
            }
            broken.push_str(rule);
        };
        let length = password.chars().count();
        // The message never says how long the password is: that much of it must not leak.
        if length < self.min_length {
            add(&format!("it needs at least {} characters", self.min_length));
        }
        type Rule = (bool, fn(char) -> bool, &'static str);
        let rules: [Rule; 4] = [
            (
                self.require_lowercase,
                char::is_lowercase,
                "a lowercase letter",
            ),
            (
                self.require_uppercase,
                char::is_uppercase,
                "an uppercase letter",
            ),
            (self.require_numbers, char::is_numeric, "a number"),
            (
                self.require_symbols,
                |c| !c.is_alphanumeric() && !c.is_whitespace(),
                "a symbol",
            ),
        ];
        for (required, test, what) in rules {
            if required && !password.chars().any(test) {
                add(&format!("it needs {what}"));
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(VaultError::PasswordPolicy(broken))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_wants_twelve_characters_and_no_empty() {
        let p = PasswordPolicy::default();
        assert!(p.check("correct horse").is_ok());
        let e = p.check("short").unwrap_err();
        assert_eq!(e.code().as_str(), "PASSWORD_POLICY");
        assert!(e.to_string().contains("at least 12"), "{e}");
        assert!(p.check("").is_err());
    }

    #[test]
    fn allow_empty_changes_nothing_else() {
        let p = PasswordPolicy {
            allow_empty: true,
            ..Default::default()
        };
        assert!(p.check("").is_ok());
        assert!(p.check("short").is_err());
    }

    #[test]
    fn a_space_is_not_a_symbol() {
        let p = PasswordPolicy {
            require_symbols: true,
            ..Default::default()
        };
        assert!(p.check("correct horse battery").is_err());
        assert!(p.check("correct horse battery!").is_ok());
        assert!(p.check("correct-horse-battery").is_ok());
    }

    #[test]
    fn character_classes_are_each_reported() {
        let p = PasswordPolicy {
            min_length: 4,
            require_lowercase: true,
            require_uppercase: true,
            require_numbers: true,
            require_symbols: true,
            allow_empty: false,
        };
        assert!(p.check("aB3$").is_ok());
        let m = p.check("abcd").unwrap_err().to_string();
        assert!(
            m.contains("uppercase")
                && m.contains("number")
                && m.contains("symbol")
                && !m.contains("lowercase"),
            "{m}"
        );
        assert!(p.check("ÄÖ9é!").is_ok(), "non-ASCII letters count");
        // One message, each rule once, in order, "; " between them.
        let m = p.check("ab").unwrap_err().to_string();
        assert!(
            m.ends_with(
                "it needs at least 4 characters; it needs an uppercase letter; \
                 it needs a number; it needs a symbol"
            ),
            "{m}"
        );
    }
}
