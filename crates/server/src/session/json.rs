//! The JSON protocol v1 side of a session: `welcome`, one handler per op, replies
//! with the request's `id`, and errors that keep the connection open.

use bavard_protocol::{
    encode_ok_reply, ClientFrame, Empty, ErrorBody, ErrorCode, HistoryRequest, JoinRequest, Request, RequestId,
    SendReply, SendRequest, ServerFrame, Welcome, DEFAULT_HISTORY_LIMIT, DEFAULT_MEMBERS_LIMIT, PROTOCOL_VERSION,
};

use super::{End, SentOutcome, Session, Socket};
use crate::{
    hub::{HubError, Post},
    metrics::{Limit, Route},
    store::PageQuery,
};

/// The event sent just before closing with 1001.
pub(super) fn closing_event() -> String {
    ServerFrame::Closing { reason: "the server is shutting down; reconnect and join with since".into() }.to_json()
}

pub(super) fn hub_error(error: HubError) -> ErrorBody {
    error.to_error_body()
}

impl<S> Session<S>
where
    S: Socket,
{
    pub(super) async fn json_open(&mut self) -> Result<(), End> {
        let welcome = ServerFrame::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            server: self.settings.server_name.clone(),
            user: self.me.user.clone(),
            session: format!("s_{:x}", self.me.session),
            limits: self.settings.limits,
        });
        self.feed_text(welcome.to_json()).await
    }

    pub(super) async fn json_text(&mut self, text: &str) -> Result<(), End> {
        let allowed = self.rate.try_take();
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(e) if allowed => return self.feed_error(e.id.as_ref(), &e.error).await,
            Err(e) => return self.rate_limited(e.id).await,
        };
        if !allowed {
            return self.rate_limited(frame.id).await;
        }
        self.strikes = 0;
        if let Err(error) = frame.request.validate(self.settings.limits.max_text_chars) {
            return self.feed_error(frame.id.as_ref(), &error).await;
        }
        let id = frame.id;
        match frame.request {
            Request::Join(join) => self.join(id, join).await,
            Request::Leave { room } => {
                if self.rooms.remove(&room) && self.hub.leave(&self.me, &room) {
                    self.reply(id, &Empty {}).await
                } else {
                    let error = ErrorBody::new(ErrorCode::NotFound, format!("you are not in room {room}"));
                    self.feed_error(id.as_ref(), &error).await
                }
            }
            Request::Send(send) => self.send(id, send).await,
            Request::History(history) => self.history(id, history).await,
            Request::Typing { room } => match self.hub.typing(&self.me, &room).await {
                Ok(()) => self.reply(id, &Empty {}).await,
                Err(e) => self.feed_error(id.as_ref(), &hub_error(e)).await,
            },
            Request::Ping => self.reply(id, &Empty {}).await,
            Request::Members(members) => {
                let limit = members.limit.unwrap_or(DEFAULT_MEMBERS_LIMIT) as usize;
                // Who is in a private room is the room's business.
                if let Err(e) = self.hub.check_read(self.me.who(), &members.room).await {
                    return self.feed_error(id.as_ref(), &hub_error(e)).await;
                }
                match self.hub.members(&members.room, members.cursor.as_deref(), limit) {
                    Ok(page) => self.reply(id, &page).await,
                    Err(e) => self.feed_error(id.as_ref(), &hub_error(e)).await,
                }
            }
            request => Box::pin(self.manage(id, request)).await,
        }
    }

    async fn rate_limited(&mut self, id: Option<RequestId>) -> Result<(), End> {
        self.settings.metrics.rate_limited();
        self.strikes += 1;
        if self.strikes >= self.settings.rate_strikes {
            return Err(End::RateLimited);
        }
        let message = format!(
            "too many frames: at most {} per second (bursts of {}); slow down",
            self.settings.rate_per_second, self.settings.rate_burst
        );
        self.feed_error(id.as_ref(), &ErrorBody::new(ErrorCode::RateLimited, message)).await
    }

    /// Replies `ok` with `result`'s fields, when the request had an id.
    pub(super) async fn reply<T: serde::Serialize>(&mut self, id: Option<RequestId>, result: &T) -> Result<(), End> {
        match id {
            Some(id) => self.feed_text(encode_ok_reply(&id, result)).await,
            None => Ok(()),
        }
    }

    async fn join(&mut self, id: Option<RequestId>, join: JoinRequest) -> Result<(), End> {
        let max = self.settings.max_rooms;
        if self.rooms.len() >= max {
            // Rooms a moderator took this connection out of no longer count.
            let (hub, me) = (&self.hub, &self.me);
            self.rooms.prune(|room| hub.is_member(me, room));
        }
        if self.rooms.len() >= max && !self.hub.is_member(&self.me, &join.room) {
            self.settings.metrics.limit_refused(Limit::RoomsPerConnection);
            let message = format!("this connection has joined {max} rooms, the most allowed: leave one first");
            return self.feed_error(id.as_ref(), &ErrorBody::new(ErrorCode::Forbidden, message)).await;
        }
        let limit = join.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        match self.hub.join(&self.me, &join.room, join.since, join.since_rev, limit).await {
            Ok(reply) => {
                self.rooms.insert(join.room);
                self.reply(id, &reply).await
            }
            Err(e) => self.feed_error(id.as_ref(), &hub_error(e)).await,
        }
    }

    async fn send(&mut self, id: Option<RequestId>, send: SendRequest) -> Result<(), End> {
        let SendRequest { room, text, key, reply_to, stream } = send;
        let post = Post { room: room.clone(), text, key, reply_to, stream };
        match self.hub.publish(&self.me, post).await {
            Ok(pending) => {
                self.settings.metrics.message_accepted(Route::Ws);
                self.pending.push_back(Box::pin(async move { SentOutcome { id, room, outcome: pending.await } }));
                Ok(())
            }
            Err(e) => self.feed_error(id.as_ref(), &hub_error(e)).await,
        }
    }

    /// Answers a send once its commit is known.
    pub(super) async fn json_sent(&mut self, sent: SentOutcome) -> Result<(), End> {
        match sent.outcome {
            Ok(posted) => {
                let reply = SendReply { room: sent.room, seq: posted.seq, ts: posted.ts, duplicate: posted.duplicate };
                self.reply(sent.id, &reply).await
            }
            Err(e) => self.feed_error(sent.id.as_ref(), &hub_error(e)).await,
        }
    }

    async fn history(&mut self, id: Option<RequestId>, history: HistoryRequest) -> Result<(), End> {
        let limit = history.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        let who = self.me.who();
        let page = match history.thread {
            Some(root) => {
                // Like `history`: with `after`, forward from it; with only `before`, the
                // replies nearest below it; with neither, the thread from its start.
                let query = match (history.after, history.before) {
                    (Some(after), before) => PageQuery::After { after, before, limit },
                    (None, Some(before)) => PageQuery::Before { before: Some(before), limit },
                    (None, None) => PageQuery::After { after: 0, before: None, limit },
                };
                self.hub.thread(who, &history.room, root, query).await
            }
            None => self.hub.history(who, &history.room, history.before, history.after, limit).await,
        };
        match page {
            Ok(page) => self.reply(id, &page).await,
            Err(e) => self.feed_error(id.as_ref(), &hub_error(e)).await,
        }
    }
}
