//! The states of a migration, one enum per side (docs/migration.md, "States"). A record keeps
//! its state twice: as the proto enum (`origin_state` / `destination_state`) the agent reads,
//! and as the text `ferry migrations` prints (the same words as before the enums; a record
//! written before them has only the text, which [`State::of`] still reads).

use std::fmt;

use ferry_proto::v1::{self as pb, MigrationRecord};

/// Which side of a migration a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The host the process left.
    Origin,
    /// The host the process went to.
    Destination,
}

impl Role {
    /// The record's `role` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Destination => "destination",
        }
    }

    /// The role of `rec` (anything but "destination" is the origin, as it always was).
    pub fn of(rec: &MigrationRecord) -> Self {
        if rec.role == "destination" {
            Role::Destination
        } else {
            Role::Origin
        }
    }
}

/// The origin's states, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginState {
    /// Recorded, before the negotiation.
    Started,
    /// The destination can run it (and said which files it lacks).
    Negotiated,
    /// Frozen, the image streaming.
    Frozen,
    /// The copy is held stopped on the destination.
    Prepared,
    /// About to turn the original into the stub (the point of no return).
    Committing,
    /// The stub took the original's place; the destination acknowledges Commit.
    Committed,
    /// Committed, the stub relaying (final for the migration).
    Done,
    /// The moved process ended (its exit status in the record).
    Ended,
    /// Given up before the commit point: the original went on here.
    Aborted,
    /// After `done`, the copy could not be relayed any more and the stub was ended.
    Lost,
}

/// The destination's states, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestState {
    /// The image arriving.
    Receiving,
    /// The copy restored and held stopped, waiting for Commit.
    Prepared,
    /// Commit heard: resuming the copy.
    Committed,
    /// The copy runs (final for the migration).
    Done,
    /// The copy ended (its exit status in the record).
    Ended,
    /// The copy was discarded (or never made).
    Aborted,
    /// A lazy (post-copy) copy that lost its origin before every page arrived: ended.
    Lost,
}

/// A record's state, with its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An origin's record.
    Origin(OriginState),
    /// A destination's record.
    Destination(DestState),
}

impl OriginState {
    const ALL: [OriginState; 10] = [
        Self::Started,
        Self::Negotiated,
        Self::Frozen,
        Self::Prepared,
        Self::Committing,
        Self::Committed,
        Self::Done,
        Self::Ended,
        Self::Aborted,
        Self::Lost,
    ];

    /// The text a record and `ferry migrations` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Negotiated => "negotiated",
            Self::Frozen => "frozen",
            Self::Prepared => "prepared",
            Self::Committing => "committing",
            Self::Committed => "committed",
            Self::Done => "done",
            Self::Ended => "ended",
            Self::Aborted => "aborted",
            Self::Lost => "lost",
        }
    }

    /// Whether nothing more happens to the migration (the moved process may still end).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Ended | Self::Aborted | Self::Lost)
    }

    /// The proto value.
    pub fn to_proto(self) -> pb::OriginState {
        match self {
            Self::Started => pb::OriginState::Started,
            Self::Negotiated => pb::OriginState::Negotiated,
            Self::Frozen => pb::OriginState::Frozen,
            Self::Prepared => pb::OriginState::Prepared,
            Self::Committing => pb::OriginState::Committing,
            Self::Committed => pb::OriginState::Committed,
            Self::Done => pb::OriginState::Done,
            Self::Ended => pb::OriginState::Ended,
            Self::Aborted => pb::OriginState::Aborted,
            Self::Lost => pb::OriginState::Lost,
        }
    }

    fn from_proto(v: pb::OriginState) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_proto() == v)
    }

    fn from_text(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl DestState {
    const ALL: [DestState; 7] = [
        Self::Receiving,
        Self::Prepared,
        Self::Committed,
        Self::Done,
        Self::Ended,
        Self::Aborted,
        Self::Lost,
    ];

    /// The text a record and `ferry migrations` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiving => "receiving",
            Self::Prepared => "prepared",
            Self::Committed => "committed",
            Self::Done => "done",
            Self::Ended => "ended",
            Self::Aborted => "aborted",
            Self::Lost => "lost",
        }
    }

    /// Whether nothing more happens to the migration (the copy may still end).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Ended | Self::Aborted | Self::Lost)
    }

    /// The proto value.
    pub fn to_proto(self) -> pb::DestinationState {
        match self {
            Self::Receiving => pb::DestinationState::Receiving,
            Self::Prepared => pb::DestinationState::Prepared,
            Self::Committed => pb::DestinationState::Committed,
            Self::Done => pb::DestinationState::Done,
            Self::Ended => pb::DestinationState::Ended,
            Self::Aborted => pb::DestinationState::Aborted,
            Self::Lost => pb::DestinationState::Lost,
        }
    }

    fn from_proto(v: pb::DestinationState) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_proto() == v)
    }

    fn from_text(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl State {
    /// The state of `rec`: the typed field of its side, or for a record written before it,
    /// its text. `None`: a state this agent does not know (a newer agent's record).
    pub fn of(rec: &MigrationRecord) -> Option<Self> {
        match Role::of(rec) {
            Role::Origin => match pb::OriginState::try_from(rec.origin_state) {
                Ok(pb::OriginState::Unspecified) => OriginState::from_text(&rec.state),
                Ok(v) => OriginState::from_proto(v),
                Err(_) => None,
            }
            .map(State::Origin),
            Role::Destination => match pb::DestinationState::try_from(rec.destination_state) {
                Ok(pb::DestinationState::Unspecified) => DestState::from_text(&rec.state),
                Ok(v) => DestState::from_proto(v),
                Err(_) => None,
            }
            .map(State::Destination),
        }
    }

    /// The side.
    pub fn role(self) -> Role {
        match self {
            State::Origin(_) => Role::Origin,
            State::Destination(_) => Role::Destination,
        }
    }

    /// The text a record and `ferry migrations` show.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Origin(s) => s.as_str(),
            State::Destination(s) => s.as_str(),
        }
    }

    /// Whether nothing more happens to the migration.
    pub fn is_final(self) -> bool {
        match self {
            State::Origin(s) => s.is_final(),
            State::Destination(s) => s.is_final(),
        }
    }

    /// `ended` on the side `role`.
    pub fn ended(role: Role) -> Self {
        match role {
            Role::Origin => State::Origin(OriginState::Ended),
            Role::Destination => State::Destination(DestState::Ended),
        }
    }

    /// Writes this state into `rec`: its role, the typed field of its side (the other's
    /// cleared) and the text.
    pub fn write(self, rec: &mut MigrationRecord) {
        rec.role = self.role().as_str().to_string();
        rec.state = self.as_str().to_string();
        match self {
            State::Origin(s) => {
                rec.origin_state = s.to_proto().into();
                rec.destination_state = 0;
            }
            State::Destination(s) => {
                rec.destination_state = s.to_proto().into();
                rec.origin_state = 0;
            }
        }
    }
}

impl From<OriginState> for State {
    fn from(s: OriginState) -> Self {
        State::Origin(s)
    }
}

impl From<DestState> for State {
    fn from(s: DestState) -> Self {
        State::Destination(s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OriginState {
    /// The state of `rec` if it is an origin's record in a state this agent knows.
    pub fn of(rec: &MigrationRecord) -> Option<Self> {
        match State::of(rec)? {
            State::Origin(s) => Some(s),
            State::Destination(_) => None,
        }
    }
}

impl DestState {
    /// The state of `rec` if it is a destination's record in a state this agent knows.
    pub fn of(rec: &MigrationRecord) -> Option<Self> {
        match State::of(rec)? {
            State::Destination(s) => Some(s),
            State::Origin(_) => None,
        }
    }
}

/// Whether `rec` is an origin's record in state `s`.
pub fn is_origin(rec: &MigrationRecord, s: OriginState) -> bool {
    State::of(rec) == Some(State::Origin(s))
}

/// Whether `rec` is a destination's record in state `s`.
pub fn is_dest(rec: &MigrationRecord, s: DestState) -> bool {
    State::of(rec) == Some(State::Destination(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_state_reads_back_with_the_same_text() {
        for s in OriginState::ALL {
            let mut rec = MigrationRecord::default();
            State::from(s).write(&mut rec);
            assert_eq!(
                (rec.role.as_str(), rec.state.as_str()),
                ("origin", s.as_str())
            );
            assert_eq!(State::of(&rec), Some(State::Origin(s)));
        }
        for s in DestState::ALL {
            let mut rec = MigrationRecord::default();
            State::from(s).write(&mut rec);
            assert_eq!(rec.role, "destination");
            assert_eq!(State::of(&rec), Some(State::Destination(s)));
        }
    }

    #[test]
    fn old_records_are_read_from_their_text() {
        let rec = MigrationRecord {
            role: "destination".into(),
            state: "prepared".into(),
            ..Default::default()
        };
        assert_eq!(
            State::of(&rec),
            Some(State::Destination(DestState::Prepared))
        );
        let rec = MigrationRecord {
            role: "origin".into(),
            state: "committing".into(),
            ..Default::default()
        };
        assert_eq!(
            State::of(&rec),
            Some(State::Origin(OriginState::Committing))
        );
        // A destination never is "committing"; an unknown text is no state.
        let rec = MigrationRecord {
            role: "destination".into(),
            state: "committing".into(),
            ..Default::default()
        };
        assert_eq!(State::of(&rec), None);
    }

    #[test]
    fn the_typed_field_wins_over_the_text() {
        let rec = MigrationRecord {
            role: "origin".into(),
            state: "started".into(),
            origin_state: pb::OriginState::Done.into(),
            ..Default::default()
        };
        assert_eq!(State::of(&rec), Some(State::Origin(OriginState::Done)));
        assert!(State::of(&rec).is_some_and(State::is_final));
    }
}
