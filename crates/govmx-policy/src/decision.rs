//! [`Decision`]: the verdict, the stable rule id that decided it and a human reason.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The action may proceed.
    Allow,
    /// The action is refused.
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// The outcome of a policy decision. Borrows from the [`crate::PolicySet`] so the allow
/// paths need no allocation; [`Decision::into_owned`] detaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision<'a> {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Stable id of the rule or list entry that decided (a contact rule id, `media-too-large`,
    /// `member:127.0.0.2:8448`, ...).
    pub rule: Cow<'a, str>,
    /// One human sentence explaining the verdict.
    pub reason: Cow<'a, str>,
}

impl<'a> Decision<'a> {
    pub(crate) fn allow(
        rule: impl Into<Cow<'a, str>>,
        reason: impl Into<Cow<'a, str>>,
    ) -> Decision<'a> {
        Decision {
            verdict: Verdict::Allow,
            rule: rule.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn deny(
        rule: impl Into<Cow<'a, str>>,
        reason: impl Into<Cow<'a, str>>,
    ) -> Decision<'a> {
        Decision {
            verdict: Verdict::Deny,
            rule: rule.into(),
            reason: reason.into(),
        }
    }

    /// Whether the verdict is [`Verdict::Allow`].
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// A copy that does not borrow the policy set.
    pub fn into_owned(self) -> Decision<'static> {
        Decision {
            verdict: self.verdict,
            rule: Cow::Owned(self.rule.into_owned()),
            reason: Cow::Owned(self.reason.into_owned()),
        }
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.verdict, self.rule, self.reason)
    }
}
