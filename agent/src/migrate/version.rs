//! The migration protocol's version, announced in the negotiation by both sides
//! (docs/migration.md, "Protocol version").
//!
//! The rule: both agents must speak the same major version; the minor versions may differ
//! (a minor version only adds what the other side may ignore). An agent from before the
//! version existed announces none and is refused by name, on both sides: the origin refuses
//! a destination's reply without one, the destination answers an origin without one (or
//! with another major version) with a problem line, which such an origin prints.

use std::fmt;

use ferry_proto::v1::{NegotiateReply, ProtocolVersion};

/// The version this agent speaks.
pub const PROTOCOL: Version = Version { major: 1, minor: 3 };

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Must be the same on both sides.
    pub major: u32,
    /// May differ.
    pub minor: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What this agent announces: [`PROTOCOL`]; under the test fault `protocol-version-next`
/// the next major version, under `protocol-version-none` nothing (as an older agent).
pub fn announced() -> Option<ProtocolVersion> {
    if super::fault("protocol-version-none") {
        return None;
    }
    let major = if super::fault("protocol-version-next") {
        PROTOCOL.major + 1
    } else {
        PROTOCOL.major
    };
    // FERRY_FAULT protocol-minor-2: announce 1.2, as an agent from before the absent runs.
    let minor = if super::fault("protocol-minor-2") {
        2
    } else {
        PROTOCOL.minor
    };
    Some(ProtocolVersion { major, minor })
}

/// Whether a destination that announced `theirs` takes the absent runs of a post-copy page
/// stream (`LazyPages.absent_starts`, 1.3): only then may the origin leave the walk of the
/// pages that follow until the copy runs (an older destination would wait for pages that
/// never come).
pub fn takes_absent_runs(theirs: Option<&ProtocolVersion>) -> bool {
    theirs.is_some_and(|v| v.major == PROTOCOL.major && v.minor >= 3)
}

/// Whether this agent can migrate with `peer`, which announced `theirs`; the error names
/// both versions and the rule.
pub fn check(peer: &str, theirs: Option<&ProtocolVersion>) -> Result<(), String> {
    let ours = match announced() {
        Some(v) => Version {
            major: v.major,
            minor: v.minor,
        },
        None => return Ok(()),
    };
    match theirs {
        None => Err(format!(
            "{peer} runs an older ferryd that announces no migration protocol version (this \
             one speaks {ours}; the same major version is required): upgrade it"
        )),
        Some(v) if v.major != ours.major => Err(format!(
            "{peer} speaks migration protocol {}.{}, this agent {ours}: the same major version \
             is required; upgrade the older agent",
            v.major, v.minor
        )),
        Some(_) => Ok(()),
    }
}

/// The destination's side: announces its version in `reply` and, when the origin `peer`
/// announced an incompatible one (or none), says so first among the problems (an older
/// origin prints them).
pub fn answer(peer: &str, theirs: Option<&ProtocolVersion>, reply: &mut NegotiateReply) {
    if let Err(why) = check(peer, theirs) {
        reply.problems.insert(0, why);
    }
    reply.protocol = announced();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32) -> ProtocolVersion {
        ProtocolVersion { major, minor }
    }

    #[test]
    fn same_major_is_compatible_whatever_the_minor() {
        assert_eq!(
            check("h2", Some(&v(PROTOCOL.major, PROTOCOL.minor))),
            Ok(())
        );
        assert_eq!(
            check("h2", Some(&v(PROTOCOL.major, PROTOCOL.minor + 3))),
            Ok(())
        );
    }

    #[test]
    fn absent_runs_from_1_3_on() {
        assert!(!takes_absent_runs(None));
        assert!(!takes_absent_runs(Some(&v(1, 2))));
        assert!(takes_absent_runs(Some(&v(1, 3))));
        assert!(takes_absent_runs(Some(&v(1, 7))));
        assert!(!takes_absent_runs(Some(&v(2, 3))));
    }

    #[test]
    fn another_major_or_none_is_refused_by_name() {
        let e = check("h2", Some(&v(PROTOCOL.major + 1, 0))).unwrap_err();
        assert!(e.contains("h2 speaks migration protocol 2.0"), "{e}");
        assert!(e.contains("same major version"), "{e}");
        let e = check("h2", None).unwrap_err();
        assert!(e.contains("h2 runs an older ferryd"), "{e}");
        assert!(e.contains("no migration protocol version"), "{e}");
    }
}
