//! Room permissions: who may join, read, write and manage a room, decided from the
//! room's rules (kind, roles, sanctions, freeze) and who asks. Pure: no I/O, and no
//! clock but the `now` passed in. The hub keeps one [`RoomRules`] per room in memory,
//! in step with the store, and asks it on every join, read and write.
//!
//! The rules, in one place:
//! - server admins may do anything anywhere, whatever the room's sanctions;
//! - `public` rooms: anyone joins, reads and writes; `private`: only users with a role;
//!   `broadcast`: anyone joins and reads, moderators write;
//! - a ban keeps a user from joining, reading and writing; a mute from writing; a kick
//!   with a duration from joining again until it ends; a frozen room takes writes from
//!   moderators only;
//! - managing a user needs the `moderator` role at least and a rank above the target's
//!   (owner > moderator > member > none), never on oneself; granting `moderator` or
//!   `owner` and changing the room's kind need the `owner` role.

use std::collections::HashMap;

use bavard_protocol::{Role, RoomKind, Timestamp};

use super::identity::Who;
use crate::store::{RuleChange, Sanction, SanctionKind, StoredRules};

/// Why an action was refused, for the user (sent as `forbidden`).
pub type Refusal = String;

/// One room's rules, as the hub enforces them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomRules {
    /// Who may join, read and write.
    pub kind: RoomKind,
    /// Seconds a member waits between two messages (0: off; moderators are exempt).
    pub slow_mode_secs: u32,
    /// Whether only moderators write.
    pub frozen: bool,
    roles: HashMap<String, Role>,
    sanctions: HashMap<String, Vec<Sanction>>,
}

/// What managing a room can change, each needing its own rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Kick, ban, mute (and lift them), or take a role away.
    Moderate,
    /// Give a user this role.
    Grant(Role),
    /// Change the topic, slow mode or freeze.
    Configure,
    /// Change the room's kind.
    ChangeKind,
}

/// A rank for comparisons: no role is below member.
fn rank(role: Option<Role>) -> u8 {
    match role {
        None => 0,
        Some(Role::Member) => 1,
        Some(Role::Moderator) => 2,
        Some(Role::Owner) => 3,
    }
}

fn until_text(sanction: &Sanction) -> String {
    sanction.until.map_or_else(String::new, |until| format!(" until {until}"))
}

impl RoomRules {
    /// The rules of a room named `room` as stored: a room without a record is public
    /// and bare, except under a direct room's name, which nobody may take before `dm`
    /// made it (a direct room without its two users).
    pub fn of_room(room: &str, stored: Option<StoredRules>) -> Self {
        match stored {
            Some(stored) => Self::with(stored),
            None if room.starts_with(crate::hub::DIRECT_PREFIX) => Self { kind: RoomKind::Direct, ..Self::default() },
            None => Self::default(),
        }
    }

    fn with(stored: StoredRules) -> Self {
        let mut rules = Self {
            kind: stored.kind,
            slow_mode_secs: stored.slow_mode_secs,
            frozen: stored.frozen,
            roles: stored.roles.into_iter().collect(),
            sanctions: HashMap::new(),
        };
        for sanction in stored.sanctions {
            rules.put_sanction(sanction);
        }
        rules
    }

    /// Applies a change the store has committed, so memory stays in step with it.
    pub fn apply(&mut self, change: &RuleChange) {
        match change {
            RuleChange::Kind(kind) => self.kind = *kind,
            RuleChange::Topic(_) => {}
            RuleChange::SlowMode(secs) => self.slow_mode_secs = *secs,
            RuleChange::Frozen(frozen) => self.frozen = *frozen,
            RuleChange::Role { user, role: Some(role) } => {
                self.roles.insert(user.clone(), *role);
            }
            RuleChange::Role { user, role: None } => {
                self.roles.remove(user);
            }
            RuleChange::Sanction(sanction) => self.put_sanction(sanction.clone()),
            RuleChange::Lift { user, kind } => {
                if let Some(list) = self.sanctions.get_mut(user) {
                    list.retain(|s| s.kind != *kind);
                    if list.is_empty() {
                        self.sanctions.remove(user);
                    }
                }
            }
        }
    }

    fn put_sanction(&mut self, sanction: Sanction) {
        let list = self.sanctions.entry(sanction.user.clone()).or_default();
        list.retain(|s| s.kind != sanction.kind);
        list.push(sanction);
    }

    /// The user's role in the room.
    pub fn role(&self, user: &str) -> Option<Role> {
        self.roles.get(user).copied()
    }

    /// The user's sanction of that kind, if it is in force at `now`.
    pub fn sanction(&self, user: &str, kind: SanctionKind, now: Timestamp) -> Option<&Sanction> {
        let list = self.sanctions.get(user)?;
        list.iter().find(|s| s.kind == kind && s.until.is_none_or(|until| until > now))
    }

    /// Whether the actor moderates the room (admins do everywhere).
    pub fn is_moderator(&self, who: Who<'_>) -> bool {
        who.admin || self.role(who.id) >= Some(Role::Moderator)
    }

    fn banned(&self, who: Who<'_>, room: &str, now: Timestamp) -> Result<(), Refusal> {
        match self.sanction(who.id, SanctionKind::Ban, now) {
            Some(ban) => Err(format!("you are banned from room {room}{}", until_text(ban))),
            None => Ok(()),
        }
    }

    /// May the actor read the room's history (and receive its events)?
    pub fn check_read(&self, who: Who<'_>, room: &str, now: Timestamp) -> Result<(), Refusal> {
        // A direct room is its two users' alone: server admins included.
        if self.kind == RoomKind::Direct {
            return match self.role(who.id) {
                Some(_) => Ok(()),
                None => Err(format!("room {room} is a direct room of two other users")),
            };
        }
        if who.admin {
            return Ok(());
        }
        self.banned(who, room, now)?;
        if self.kind == RoomKind::Private && self.role(who.id).is_none() {
            return Err(format!("room {room} is private: ask its owner to add you"));
        }
        Ok(())
    }

    /// May the actor join the room?
    pub fn check_join(&self, who: Who<'_>, room: &str, now: Timestamp) -> Result<(), Refusal> {
        self.check_read(who, room, now)?;
        if who.admin {
            return Ok(());
        }
        match self.sanction(who.id, SanctionKind::Kick, now) {
            Some(kick) => Err(format!("you were kicked from room {room}; you may join again{}", until_text(kick))),
            None => Ok(()),
        }
    }

    /// May the actor write in the room (send, typing)? Slow mode is the hub's to check.
    pub fn check_write(&self, who: Who<'_>, room: &str, now: Timestamp) -> Result<(), Refusal> {
        if self.kind == RoomKind::Direct {
            return self.check_read(who, room, now);
        }
        if who.admin {
            return Ok(());
        }
        self.check_read(who, room, now)?;
        if let Some(mute) = self.sanction(who.id, SanctionKind::Mute, now) {
            return Err(format!("you are muted in room {room}{}", until_text(mute)));
        }
        let moderator = self.is_moderator(who);
        if self.kind == RoomKind::Broadcast && !moderator {
            return Err(format!("room {room} is a broadcast room: only its moderators write"));
        }
        if self.frozen && !moderator {
            return Err(format!("room {room} is frozen: only its moderators write"));
        }
        Ok(())
    }

    /// May the actor use `power` on the room, on `target` when it names a user?
    pub fn check_manage(&self, who: Who<'_>, power: Power, target: Option<&str>, room: &str) -> Result<(), Refusal> {
        if self.kind == RoomKind::Direct {
            return Err(format!("room {room} is a direct room: it has its two users, no roles, and no moderation"));
        }
        if who.admin {
            return Ok(());
        }
        let mine = self.role(who.id);
        let needed = match power {
            Power::Moderate | Power::Configure | Power::Grant(Role::Member) => Role::Moderator,
            Power::Grant(_) | Power::ChangeKind => Role::Owner,
        };
        if mine < Some(needed) {
            let what = match power {
                Power::Moderate => "moderate users",
                Power::Grant(Role::Member) => "add members",
                Power::Grant(_) => "give roles",
                Power::Configure => "change its settings",
                Power::ChangeKind => "change its kind",
            };
            return Err(format!("only the room's {}s may {what} in room {room}", needed.as_str()));
        }
        if let Some(target) = target {
            if target == who.id {
                return Err("you cannot do this to yourself".to_owned());
            }
            if rank(self.role(target)) >= rank(mine) {
                return Err(format!("{target} is {} of room {room}, as high as you", article(self.role(target))));
            }
        }
        Ok(())
    }
}

fn article(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Owner) => "an owner",
        Some(Role::Moderator) => "a moderator",
        Some(Role::Member) | None => "a member",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &'static str, admin: bool) -> Who<'static> {
        Who { id, admin }
    }

    fn user(id: &'static str) -> Who<'static> {
        actor(id, false)
    }

    fn rules(kind: RoomKind, roles: &[(&str, Role)]) -> RoomRules {
        RoomRules::of_room(
            "r",
            Some(StoredRules {
                kind,
                roles: roles.iter().map(|(u, r)| ((*u).to_owned(), *r)).collect(),
                ..StoredRules::default()
            }),
        )
    }

    fn sanction(user: &str, kind: SanctionKind, until: Option<i64>) -> RuleChange {
        RuleChange::Sanction(Sanction { user: user.into(), kind, until: until.map(Timestamp), reason: None })
    }

    const NOW: Timestamp = Timestamp(1_000_000);

    #[test]
    fn kinds_decide_who_joins_reads_and_writes() {
        let public = rules(RoomKind::Public, &[]);
        assert!(public.check_join(user("a"), "r", NOW).is_ok());
        assert!(public.check_write(actor("g_x", false), "r", NOW).is_ok());

        let private = rules(RoomKind::Private, &[("m", Role::Member)]);
        assert!(private.check_join(user("a"), "r", NOW).unwrap_err().contains("private"));
        assert!(private.check_read(user("a"), "r", NOW).is_err());
        assert!(private.check_write(user("a"), "r", NOW).is_err());
        assert!(private.check_join(user("m"), "r", NOW).is_ok());
        assert!(private.check_write(user("m"), "r", NOW).is_ok());
        assert!(private.check_join(actor("boss", true), "r", NOW).is_ok());

        let broadcast = rules(RoomKind::Broadcast, &[("mod", Role::Moderator)]);
        assert!(broadcast.check_join(user("a"), "r", NOW).is_ok());
        assert!(broadcast.check_write(user("a"), "r", NOW).unwrap_err().contains("broadcast"));
        assert!(broadcast.check_write(user("mod"), "r", NOW).is_ok());
        assert!(broadcast.check_write(actor("boss", true), "r", NOW).is_ok());
    }

    #[test]
    fn sanctions_hold_until_they_end_or_are_lifted() {
        let mut room = rules(RoomKind::Public, &[]);
        room.apply(&sanction("b", SanctionKind::Ban, None));
        room.apply(&sanction("m", SanctionKind::Mute, Some(NOW.0 + 1)));
        room.apply(&sanction("k", SanctionKind::Kick, Some(NOW.0 - 1)));
        assert!(room.check_join(user("b"), "r", NOW).unwrap_err().contains("banned"));
        assert!(room.check_read(user("b"), "r", NOW).is_err());
        assert!(room.check_join(user("m"), "r", NOW).is_ok());
        assert!(room.check_write(user("m"), "r", NOW).unwrap_err().contains("muted"));
        assert!(room.check_write(user("m"), "r", Timestamp(NOW.0 + 1)).is_ok(), "the mute ended");
        assert!(room.check_join(user("k"), "r", NOW).is_ok(), "the kick ended");
        room.apply(&sanction("k", SanctionKind::Kick, Some(NOW.0 + 60_000)));
        assert!(room.check_join(user("k"), "r", NOW).unwrap_err().contains("kicked"));
        assert!(room.check_read(user("k"), "r", NOW).is_ok(), "a kick does not stop reading");
        room.apply(&RuleChange::Lift { user: "b".into(), kind: SanctionKind::Ban });
        assert!(room.check_join(user("b"), "r", NOW).is_ok());
        assert!(room.check_join(actor("b", true), "r", NOW).is_ok());
    }

    #[test]
    fn a_frozen_room_takes_writes_from_moderators_only() {
        let mut room = rules(RoomKind::Public, &[("mod", Role::Moderator), ("own", Role::Owner)]);
        room.apply(&RuleChange::Frozen(true));
        assert!(room.check_write(user("a"), "r", NOW).unwrap_err().contains("frozen"));
        assert!(room.check_write(user("mod"), "r", NOW).is_ok());
        assert!(room.check_write(user("own"), "r", NOW).is_ok());
        room.apply(&RuleChange::Frozen(false));
        assert!(room.check_write(user("a"), "r", NOW).is_ok());
    }

    #[test]
    fn managing_needs_a_rank_above_the_target() {
        let room = rules(
            RoomKind::Public,
            &[("own", Role::Owner), ("own2", Role::Owner), ("mod", Role::Moderator), ("mem", Role::Member)],
        );
        let check = |who: &'static str, power, target| room.check_manage(user(who), power, target, "r");
        assert!(check("mod", Power::Moderate, Some("mem")).is_ok());
        assert!(check("mod", Power::Moderate, Some("stranger")).is_ok());
        assert!(check("mod", Power::Moderate, Some("own")).is_err(), "not on an owner");
        assert!(check("mod", Power::Moderate, Some("mod")).is_err(), "not on oneself");
        assert!(check("mem", Power::Moderate, Some("stranger")).is_err(), "members do not moderate");
        assert!(check("own", Power::Moderate, Some("mod")).is_ok());
        assert!(check("own", Power::Moderate, Some("own2")).is_err(), "not on another owner");
        assert!(check("mod", Power::Grant(Role::Member), Some("stranger")).is_ok());
        assert!(check("mod", Power::Grant(Role::Moderator), Some("stranger")).is_err());
        assert!(check("own", Power::Grant(Role::Moderator), Some("mem")).is_ok());
        assert!(check("own", Power::Grant(Role::Owner), Some("mem")).is_ok());
        assert!(check("mod", Power::Configure, None).is_ok());
        assert!(check("mod", Power::ChangeKind, None).is_err());
        assert!(check("own", Power::ChangeKind, None).is_ok());
        let admin = actor("boss", true);
        assert!(room.check_manage(admin, Power::Moderate, Some("own"), "r").is_ok());
    }
}
