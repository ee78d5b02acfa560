//! Changing rooms' rules: creating rooms, roles, kicks, bans, mutes and room settings,
//! for the WebSocket ops and the REST API alike. Each change is checked against the
//! actor's rank ([`crate::auth::rules`]), committed to the store with its audit entry in
//! one transaction, applied to the room's rules in memory, and then takes effect on
//! live connections: a kicked or banned user's connections leave the room at once
//! (JSON ones receive a `removed` event, plain-text ones are closed with 1008), and so
//! do non-members' when a room becomes private.

use std::sync::Arc;

use bavard_protocol::{RemovedBecause, RemovedEvent, Role, RoomKind, RoomName, ServerFrame, Timestamp};

use super::{
    guard::RoomGuard, messaging::DIRECT_PREFIX, Frame, Hub, HubError, Protocol, RoomListing, Subscriber, GUEST_PREFIX,
};
use crate::{
    auth::{Actor, Power, Standing},
    broker::{ClusterBody, ClusterEvent},
    store::{AuditEntry, AuditRecord, NewRoom, RuleChange, Sanction, SanctionKind},
};

/// A sanction a moderator puts on a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanctioning {
    /// Out of the room now (and, with a duration, kept out until it ends).
    Kick,
    /// Out of the room now and kept from joining, reading and writing.
    Ban,
    /// Kept from writing.
    Mute,
}

impl Sanctioning {
    fn kind(self) -> SanctionKind {
        match self {
            Self::Kick => SanctionKind::Kick,
            Self::Ban => SanctionKind::Ban,
            Self::Mute => SanctionKind::Mute,
        }
    }

    fn action(self) -> &'static str {
        self.kind().as_str()
    }
}

/// Changes to a room's settings (`PATCH /api/rooms/{room}`); absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomChanges {
    /// A new kind.
    pub kind: Option<RoomKind>,
    /// A new topic.
    pub topic: Option<String>,
    /// A new slow mode (0: off).
    pub slow_mode_secs: Option<u32>,
    /// Freeze or unfreeze.
    pub frozen: Option<bool>,
}

fn audit(
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    reason: Option<String>,
    detail: Option<String>,
) -> AuditEntry {
    AuditEntry {
        ts: Timestamp::now(),
        actor: actor.user.clone(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        reason,
        detail,
    }
}

impl Hub {
    /// Creates a room of `kind`. A signed-in creator owns it; guests may create public
    /// rooms only, and own them not (a guest's name proves nothing); the REST API key
    /// creates ownerless rooms. [`HubError::RoomExists`] when the name is taken (by a
    /// room created, written to or joined before).
    pub async fn create_room(
        &self,
        actor: &Actor,
        name: &RoomName,
        kind: RoomKind,
        topic: String,
    ) -> Result<RoomListing, HubError> {
        if kind == RoomKind::Direct || name.as_str().starts_with(DIRECT_PREFIX) {
            return Err(HubError::Forbidden(format!(
                "direct rooms (named {DIRECT_PREFIX}...) are made with op dm, not created"
            )));
        }
        let owner = match actor.standing {
            Standing::Guest if kind != RoomKind::Public => {
                return Err(HubError::Forbidden(format!(
                    "only signed-in users may create {} rooms: connect with a token",
                    kind.as_str()
                )))
            }
            Standing::Guest => None,
            Standing::Signed => Some(actor.user.id.clone()),
            Standing::Admin if actor.user.id == Actor::api().user.id => None,
            Standing::Admin => Some(actor.user.id.clone()),
        };
        let joined = self.online_count(name) > 0;
        let entry = audit(actor, "create", None, None, Some(kind.as_str().to_owned()));
        let room = NewRoom { room: name.clone(), kind, topic, owner: owner.clone(), members: Vec::new() };
        if joined || !self.store.create_room(room, entry).await? {
            return Err(HubError::RoomExists(name.clone()));
        }
        // A guard loaded before (a refused join, say) holds the old, bare rules.
        let guard = self.guards.get(self.store.as_ref(), name).await?;
        guard.update(|rules| {
            rules.apply(&RuleChange::Kind(kind));
            if let Some(owner) = owner {
                rules.apply(&RuleChange::Role { user: owner, role: Some(Role::Owner) });
            }
        });
        self.metrics.moderation_action("create");
        self.stored_room(name).await
    }

    /// Changes a room's kind, topic, slow mode or freeze (at least one).
    pub async fn configure(
        &self,
        actor: &Actor,
        name: &RoomName,
        changes: RoomChanges,
    ) -> Result<RoomListing, HubError> {
        let RoomChanges { kind, topic, slow_mode_secs, frozen } = changes;
        if kind == Some(RoomKind::Direct) {
            return Err(HubError::Forbidden("a room cannot become direct: direct rooms are made with op dm".into()));
        }
        let mut list = Vec::new();
        let mut done = Vec::new();
        if let Some(kind) = kind {
            list.push(RuleChange::Kind(kind));
            done.push(format!("kind {}", kind.as_str()));
        }
        if let Some(topic) = topic {
            list.push(RuleChange::Topic(topic));
            done.push("topic".to_owned());
        }
        if let Some(secs) = slow_mode_secs {
            list.push(RuleChange::SlowMode(secs));
            done.push(format!("slow mode {secs}s"));
        }
        if let Some(frozen) = frozen {
            list.push(RuleChange::Frozen(frozen));
            done.push(if frozen { "frozen" } else { "unfrozen" }.to_owned());
        }
        let power = if kind.is_some() { Power::ChangeKind } else { Power::Configure };
        let entry = audit(actor, "configure", None, None, Some(done.join(", ")));
        self.change(actor, name, power, None, list, entry).await?;
        if kind == Some(RoomKind::Private) {
            // Users without a role (and not admins) may no longer be in the room.
            self.evict_everywhere(name, None, RemovedBecause::Kind, None, None).await;
        }
        self.stored_room(name).await
    }

    /// Gives `user` a role in the room (`add_member`, `set_role`), or takes it away
    /// (`remove_member`: in a private room, the user's connections leave it).
    pub async fn set_role(
        &self,
        actor: &Actor,
        name: &RoomName,
        user: &str,
        role: Option<Role>,
        action: &'static str,
    ) -> Result<(), HubError> {
        if role.is_some() && user.starts_with(GUEST_PREFIX) {
            return Err(HubError::Forbidden(format!(
                "{user} is a guest, whose name anyone can take: roles go to signed-in users only"
            )));
        }
        let power = role.map_or(Power::Moderate, Power::Grant);
        let detail = role.map(|role| role.as_str().to_owned());
        let entry = audit(actor, action, Some(user), None, detail);
        let change = RuleChange::Role { user: user.to_owned(), role };
        let guard = self.change(actor, name, power, Some(user), vec![change], entry).await?;
        if role.is_none() && guard.read(|rules| rules.kind) == RoomKind::Private {
            self.evict_everywhere(name, Some(user), RemovedBecause::RemoveMember, None, None).await;
        }
        Ok(())
    }

    /// Kicks, bans or mutes `user` for `duration_secs` (None: a kick that only removes,
    /// a ban or mute until lifted). Returns when the sanction ends, if it does.
    pub async fn sanction(
        &self,
        actor: &Actor,
        name: &RoomName,
        user: &str,
        what: Sanctioning,
        duration_secs: Option<u64>,
        reason: Option<String>,
    ) -> Result<Option<Timestamp>, HubError> {
        let until = duration_secs.map(|secs| Timestamp(Timestamp::now().0.saturating_add((secs * 1000) as i64)));
        let detail = duration_secs.map(|secs| format!("{secs}s"));
        let entry = audit(actor, what.action(), Some(user), reason.clone(), detail);
        // A kick without a duration leaves nothing behind but its audit entry.
        let lasting = what != Sanctioning::Kick || until.is_some();
        let changes = if lasting {
            let sanction = Sanction { user: user.to_owned(), kind: what.kind(), until, reason: reason.clone() };
            vec![RuleChange::Sanction(sanction)]
        } else {
            Vec::new()
        };
        self.change(actor, name, Power::Moderate, Some(user), changes, entry).await?;
        let removed = match what {
            Sanctioning::Kick => RemovedBecause::Kick,
            Sanctioning::Ban => RemovedBecause::Ban,
            Sanctioning::Mute => return Ok(until),
        };
        self.evict_everywhere(name, Some(user), removed, reason, until).await;
        Ok(until)
    }

    /// Lifts `user`'s ban or mute (`unban`, `unmute`).
    pub async fn lift(
        &self,
        actor: &Actor,
        name: &RoomName,
        user: &str,
        what: Sanctioning,
        reason: Option<String>,
    ) -> Result<(), HubError> {
        let action = if what == Sanctioning::Ban { "unban" } else { "unmute" };
        let entry = audit(actor, action, Some(user), reason, None);
        let change = RuleChange::Lift { user: user.to_owned(), kind: what.kind() };
        self.change(actor, name, Power::Moderate, Some(user), vec![change], entry).await.map(drop)
    }

    /// The room's audit log, newest first, for its moderators and admins.
    pub async fn audit_log(
        &self,
        actor: &Actor,
        name: &RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, HubError> {
        if !self.knows_room(name).await? {
            return Err(HubError::UnknownRoom(name.clone()));
        }
        let guard = self.guards.get(self.store.as_ref(), name).await?;
        if !guard.read(|rules| rules.is_moderator(actor.who())) {
            return Err(HubError::Forbidden(format!("only the moderators of room {name} may read its audit log")));
        }
        Ok(self.store.audit(name.clone(), before, limit).await?)
    }

    /// Checks `power`, commits `changes` with `entry`, applies them in memory: one
    /// change at a time per room.
    async fn change(
        &self,
        actor: &Actor,
        name: &RoomName,
        power: Power,
        target: Option<&str>,
        changes: Vec<RuleChange>,
        entry: AuditEntry,
    ) -> Result<Arc<RoomGuard>, HubError> {
        if !self.knows_room(name).await? {
            return Err(HubError::UnknownRoom(name.clone()));
        }
        let guard = self.guards.get(self.store.as_ref(), name).await?;
        let one_at_a_time = guard.changing().await;
        guard
            .read(|rules| rules.check_manage(actor.who(), power, target, name.as_str()))
            .map_err(HubError::Forbidden)?;
        let action = entry.action.clone();
        self.store.change_room(name.clone(), changes.clone(), entry).await?;
        guard.update(|rules| changes.iter().for_each(|change| rules.apply(change)));
        drop(one_at_a_time);
        self.metrics.moderation_action(&action);
        if !changes.is_empty() {
            self.tell_cluster(ClusterBody::RulesChanged { room: name.clone() });
        }
        Ok(guard)
    }

    /// Tells the other nodes (nothing on a node alone).
    fn tell_cluster(&self, body: ClusterBody) {
        if self.broker.clustered() {
            self.broker.publish(ClusterEvent { origin: Arc::clone(&self.settings.node), body });
        }
    }

    /// Takes `user` (None: every user without a role) out of the room on this node and
    /// tells the other nodes to do the same.
    async fn evict_everywhere(
        &self,
        name: &RoomName,
        user: Option<&str>,
        action: RemovedBecause,
        reason: Option<String>,
        until: Option<Timestamp>,
    ) {
        self.evict_here(name, user, action, reason.clone(), until).await;
        let user = user.map(str::to_owned);
        self.tell_cluster(ClusterBody::Evict { room: name.clone(), user, action, reason, until });
    }

    /// Takes `user`'s connections (None: those of every user without a role) out of the
    /// room on this node. Admins are above every room's rules: their connections stay.
    pub(super) async fn evict_here(
        &self,
        name: &RoomName,
        user: Option<&str>,
        action: RemovedBecause,
        reason: Option<String>,
        until: Option<Timestamp>,
    ) {
        let roles = match user {
            Some(_) => None,
            None => match self.guards.get(self.store.as_ref(), name).await {
                Ok(guard) => Some(guard),
                Err(e) => {
                    tracing::error!(error = %e, room = %name, "cannot read the room's rules to take non-members out");
                    return;
                }
            },
        };
        let goes = |member: &Subscriber| {
            member.standing != Standing::Admin
                && match (user, &roles) {
                    (Some(user), _) => member.user.id == user,
                    (None, Some(guard)) => guard.read(|rules| rules.role(&member.user.id).is_none()),
                    (None, None) => false,
                }
        };
        self.evict(name, goes, action, reason, until);
    }

    /// Takes the connections `goes` picks out of the room: JSON ones get a `removed`
    /// event, plain-text ones (whose only room this is) are closed with 1008.
    fn evict(
        &self,
        name: &RoomName,
        goes: impl Fn(&Subscriber) -> bool,
        action: RemovedBecause,
        reason: Option<String>,
        until: Option<Timestamp>,
    ) {
        let Some(room) = self.room(name) else { return };
        let (removed, changes) = room.evict(goes);
        for change in changes {
            self.count_changed(&room, change);
        }
        if !removed.is_empty() && self.broker.clustered() {
            self.presence.changed(name);
        }
        if room.is_empty() {
            self.drop_room(name, &room);
        }
        if removed.is_empty() {
            return;
        }
        let event = RemovedEvent { room: name.clone(), action, reason: reason.clone(), until };
        let frame = Frame::from(ServerFrame::Removed(event).to_json());
        let why = match (action, &reason) {
            (RemovedBecause::Ban, _) => format!("banned from room {name}"),
            (RemovedBecause::Kick, _) => format!("kicked from room {name}"),
            _ => format!("no longer a member of room {name}"),
        };
        let why = match reason {
            Some(reason) => format!("{why}: {reason}"),
            None => why,
        };
        for member in removed {
            match member.protocol {
                Protocol::Json => {
                    member.outbox.push(frame.clone());
                }
                // Close reasons are at most 123 bytes.
                Protocol::Plain => member.outbox.evict(truncate(&why, 123)),
            }
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
