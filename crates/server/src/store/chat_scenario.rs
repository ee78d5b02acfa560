//! One test body for the chat features of every store (edits, deletes, streamed text,
//! reactions, threads, search, read positions), run by each backend's tests against its
//! real database: [`exercise`] makes the changes and checks each answer, and
//! [`state`] reads what a restart must keep.

use std::time::Duration;

use bavard_protocol::{Message, Reaction, RoomName, Timestamp, User, MAX_REACTIONS_PER_MESSAGE};

use super::{ChangeMessage, ChangeRefused, Changed, MessageChange, MessageStore, NewMessage, PageQuery};

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

fn user(id: &str) -> User {
    User { id: id.into(), name: id.into() }
}

async fn send(store: &dyn MessageStore, room_name: &str, from: &str, text: &str, reply_to: Option<u64>) -> u64 {
    send_message(store, room_name, from, text, reply_to, false).await
}

async fn send_message(
    store: &dyn MessageStore,
    room_name: &str,
    from: &str,
    text: &str,
    reply_to: Option<u64>,
    streaming: bool,
) -> u64 {
    let message =
        NewMessage { room: room(room_name), from: user(from), text: text.into(), key: None, reply_to, streaming };
    store.append(message).await.unwrap().await.unwrap().seq
}

/// What a change answered, its refusal as `Err`.
type Answer = Result<Changed, ChangeRefused>;

async fn change(store: &dyn MessageStore, seq: u64, by: &str, moderator: bool, what: MessageChange, at: i64) -> Answer {
    let ask = ChangeMessage { room: room("chat"), seq, by: by.into(), moderator, change: what, at: Timestamp(at) };
    store.change_message(ask).await.unwrap()
}

fn done(rev: u64, offset: usize, count: u32) -> Answer {
    Ok(Changed { changed: true, rev, offset, count })
}

fn react(emoji: &str, on: bool) -> MessageChange {
    MessageChange::React { emoji: emoji.into(), on }
}

fn append(text: &str, max_chars: usize) -> MessageChange {
    MessageChange::Append { text: text.into(), max_chars }
}

/// All of `chat`, annotated for `viewer`.
async fn messages(store: &dyn MessageStore, viewer: Option<&str>) -> Vec<Message> {
    let page = store.page(room("chat"), PageQuery::After { after: 0, before: None, limit: 100 }).await.unwrap();
    store.annotate(room("chat"), page.messages, viewer.map(Into::into)).await.unwrap()
}

async fn search(store: &dyn MessageStore, room_name: &str, q: &str, limit: u32, offset: u32) -> (Vec<u64>, bool) {
    store.search(room(room_name), q.into(), limit, offset).await.unwrap()
}

/// Everything a restart must keep, as the reads answer it.
#[derive(Debug, PartialEq)]
pub(crate) struct State {
    messages_for_bob: Vec<Message>,
    messages_for_nobody: Vec<Message>,
    rev: u64,
    changed: (Vec<u64>, bool),
    thread: (Vec<u64>, bool),
    unread: Vec<u64>,
    searches: Vec<(Vec<u64>, bool)>,
}

/// Reads the state [`exercise`] leaves.
pub(crate) async fn state(store: &dyn MessageStore) -> State {
    let mut unread = Vec::new();
    for who in ["alice", "bob", "carol"] {
        unread.push(store.unread(room("chat"), who.into()).await.unwrap());
    }
    let mut searches = Vec::new();
    for q in ["world", "hel", "brave wor", "there"] {
        let (mut found, more) = search(store, "chat", q, 10, 0).await;
        // Equal ranks may come in any order: the first (the best) is kept in place.
        let first = 1.min(found.len());
        found[first..].sort_unstable();
        searches.push((found, more));
    }
    State {
        messages_for_bob: messages(store, Some("bob")).await,
        messages_for_nobody: messages(store, None).await,
        rev: store.room_rev(room("chat")).await.unwrap(),
        changed: store.changed_since(room("chat"), 100, 0, 100).await.unwrap(),
        thread: store.thread(room("chat"), 1, PageQuery::After { after: 0, before: None, limit: 10 }).await.unwrap(),
        unread,
        searches,
    }
}

/// Stores messages in `chat` and `other`, changes them, and checks every answer and
/// read (see the module doc); answers the state it leaves.
pub(crate) async fn exercise(store: &dyn MessageStore) -> State {
    assert_eq!(send(store, "chat", "alice", "hello world", None).await, 1);
    assert_eq!(send(store, "chat", "bob", "hello there", None).await, 2);
    assert_eq!(send_message(store, "chat", "alice", "stream", None, true).await, 3);
    assert_eq!(send(store, "chat", "bob", "reply one", Some(1)).await, 4);
    assert_eq!(send(store, "chat", "carol", "reply two", Some(1)).await, 5);
    assert_eq!(send(store, "chat", "alice", "goodbye world", None).await, 6);
    assert_eq!(send(store, "chat", "bob", "reply three", Some(1)).await, 7);
    assert_eq!(send(store, "chat", "alice", "world world world", None).await, 8);
    assert_eq!(send(store, "other", "alice", "hello world elsewhere", None).await, 1);
    assert_eq!(store.room_rev(room("chat")).await.unwrap(), 0);

    // A streamed message reads as such before it is finished.
    let at = store.messages_at(room("chat"), vec![3, 99, 1]).await.unwrap();
    assert_eq!(at.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 1]);
    let at = store.annotate(room("chat"), at, None).await.unwrap();
    assert!(at[0].streaming && at[0].text == "stream" && at[0].rev == 0);

    // Edits: the author only, not while streamed.
    let edit = |text: &str| MessageChange::Edit(text.into());
    assert_eq!(
        change(store, 1, "bob", true, edit("no"), 10).await,
        Err(ChangeRefused::NotAuthor { what: "edit", seq: 1 })
    );
    assert_eq!(change(store, 1, "alice", false, edit("hello brave world"), 11).await, done(1, 11, 0));
    assert_eq!(change(store, 3, "alice", false, edit("no"), 12).await, Err(ChangeRefused::Streaming(3)));
    assert_eq!(
        change(store, 99, "alice", false, edit("no"), 12).await,
        Err(ChangeRefused::NoMessage { room: room("chat"), seq: 99 })
    );

    // Streamed text: the author appends up to the limit, then finishes.
    let refused = change(store, 3, "bob", false, append(" no", 100), 13).await;
    assert_eq!(refused, Err(ChangeRefused::NotAuthor { what: "append to", seq: 3 }));
    assert_eq!(change(store, 3, "alice", false, append(" more", 100), 14).await, done(2, 6, 0));
    assert_eq!(change(store, 3, "alice", false, append("!", 11), 15).await, Err(ChangeRefused::TooLong(11)));
    let refused = change(store, 3, "bob", false, MessageChange::Finish, 16).await;
    assert_eq!(refused, Err(ChangeRefused::NotAuthor { what: "finish", seq: 3 }));
    assert_eq!(change(store, 3, "alice", false, MessageChange::Finish, 17).await, done(3, 11, 0));
    assert_eq!(change(store, 3, "alice", false, append("!", 100), 18).await, Err(ChangeRefused::NotStreaming(3)));
    assert_eq!(change(store, 1, "alice", false, MessageChange::Finish, 18).await, Err(ChangeRefused::NotStreaming(1)));

    // Deletes: the author or a moderator; once deleted, nothing else.
    let refused = change(store, 2, "carol", false, MessageChange::Delete, 19).await;
    assert_eq!(refused, Err(ChangeRefused::NotAuthor { what: "delete", seq: 2 }));
    assert_eq!(change(store, 2, "carol", true, MessageChange::Delete, 20).await, done(4, 11, 0));
    let again = change(store, 2, "bob", false, MessageChange::Delete, 21).await;
    assert_eq!(again, Ok(Changed { changed: false, rev: 4, offset: 0, count: 0 }));
    assert_eq!(change(store, 2, "bob", false, edit("back"), 22).await, Err(ChangeRefused::Deleted(2)));
    assert_eq!(change(store, 2, "bob", false, react("👍", true), 22).await, Err(ChangeRefused::Deleted(2)));

    // Reactions: anyone; a repeat, or taking back one never given, changes nothing.
    assert_eq!(change(store, 1, "bob", false, react("👍", true), 30).await, done(5, 0, 1));
    let again = change(store, 1, "bob", false, react("👍", true), 31).await;
    assert_eq!(again, Ok(Changed { changed: false, rev: 5, offset: 0, count: 1 }));
    assert_eq!(change(store, 1, "alice", false, react("🎉", true), 32).await, done(6, 0, 1));
    assert_eq!(change(store, 1, "carol", false, react("👍", true), 33).await, done(7, 0, 2));
    let never = change(store, 1, "carol", false, react("🎉", false), 34).await;
    assert_eq!(never, Ok(Changed { changed: false, rev: 7, offset: 0, count: 1 }));
    assert_eq!(change(store, 1, "bob", false, react("👀", true), 35).await, done(8, 0, 1));
    assert_eq!(change(store, 1, "bob", false, react("👀", false), 36).await, done(9, 0, 0));

    // Reads bring messages to their current state.
    let for_bob = messages(store, Some("bob")).await;
    let first = &for_bob[0];
    assert_eq!((first.text.as_str(), first.edited_at, first.rev), ("hello brave world", Some(Timestamp(11)), 9));
    let thumbs = Reaction { emoji: "👍".into(), count: 2, me: true };
    let party = Reaction { emoji: "🎉".into(), count: 1, me: false };
    assert_eq!(first.reactions, [thumbs.clone(), party.clone()]);
    assert_eq!((first.reply_count, first.last_reply_at), (3, Some(for_bob[6].ts)));
    assert!(for_bob[1].deleted && for_bob[1].text.is_empty() && for_bob[1].rev == 4);
    assert!(!for_bob[2].streaming && for_bob[2].text == "stream more" && for_bob[2].rev == 3);
    assert_eq!((for_bob[3].rev, for_bob[3].edited_at, for_bob[3].reply_count), (0, None, 0));
    let for_nobody = messages(store, None).await;
    assert_eq!(for_nobody[0].reactions, [Reaction { me: false, ..thumbs }, party]);

    // Changes come in the order they were made, last change of each message only.
    let chat = || room("chat");
    assert_eq!(store.room_rev(chat()).await.unwrap(), 9);
    assert_eq!(store.room_rev(room("other")).await.unwrap(), 0);
    assert_eq!(store.changed_since(chat(), 100, 0, 10).await.unwrap(), (vec![3, 2, 1], false));
    assert_eq!(store.changed_since(chat(), 100, 3, 10).await.unwrap(), (vec![2, 1], false));
    assert_eq!(store.changed_since(chat(), 100, 0, 1).await.unwrap(), (vec![3], true));
    assert_eq!(store.changed_since(chat(), 2, 0, 10).await.unwrap(), (vec![2, 1], false));
    assert_eq!(store.changed_since(chat(), 100, 9, 10).await.unwrap(), (vec![], false));

    // Threads page like history.
    let thread = |query| store.thread(chat(), 1, query);
    assert_eq!(thread(PageQuery::Before { before: None, limit: 2 }).await.unwrap(), (vec![5, 7], true));
    assert_eq!(thread(PageQuery::Before { before: Some(5), limit: 2 }).await.unwrap(), (vec![4], false));
    assert_eq!(thread(PageQuery::After { after: 0, before: None, limit: 2 }).await.unwrap(), (vec![4, 5], true));
    assert_eq!(thread(PageQuery::After { after: 4, before: Some(7), limit: 9 }).await.unwrap(), (vec![5], false));
    assert_eq!(store.thread(chat(), 6, PageQuery::Before { before: None, limit: 9 }).await.unwrap(), (vec![], false));

    // Search: current text, deleted left out, one room, best first, paged. A store may
    // index a little after the commit: the first answers are waited for.
    let indexed = async {
        while search(store, "chat", "world", 10, 0).await.0.len() < 3
            || search(store, "chat", "brave", 10, 0).await.0 != [1]
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), indexed).await.expect("search did not see the messages within 10s");
    let (best, more) = search(store, "chat", "world", 10, 0).await;
    assert_eq!((best[0], more), (8, false), "the message saying world three times comes first: {best:?}");
    let mut rest = best[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, [1, 6]);
    assert_eq!(search(store, "chat", "wor", 2, 0).await, (best[..2].to_vec(), true));
    assert_eq!(search(store, "chat", "wor", 2, 2).await, (best[2..].to_vec(), false));
    assert_eq!(search(store, "chat", "hel", 10, 0).await, (vec![1], false), "the deleted hello there is left out");
    assert_eq!(search(store, "chat", "there", 10, 0).await, (vec![], false));
    assert_eq!(search(store, "chat", "brave wor", 10, 0).await, (vec![1], false));
    assert_eq!(search(store, "chat", "wor:* | ' & !\"", 10, 0).await.0.len(), 3, "query syntax is read as words");
    assert_eq!(search(store, "chat", "elsewhere", 10, 0).await, (vec![], false));
    assert_eq!(search(store, "other", "hello", 10, 0).await, (vec![1], false));
    assert_eq!(search(store, "chat", " ;; ", 10, 0).await, (vec![], false));

    // Read positions only move forward; unread counts others' messages not deleted.
    assert_eq!(store.mark_read(chat(), "bob".into(), 3).await.unwrap(), (3, true));
    assert_eq!(store.mark_read(chat(), "bob".into(), 2).await.unwrap(), (3, false), "a position never moves back");
    assert_eq!(store.unread(chat(), "bob".into()).await.unwrap(), 3, "5, 6 and 8");
    assert_eq!(store.unread(chat(), "carol".into()).await.unwrap(), 6, "all but 2 (deleted) and her 5");
    assert_eq!(store.unread(chat(), "alice".into()).await.unwrap(), 3, "4, 5 and 7 (2 is deleted)");
    assert_eq!(store.mark_read(chat(), "alice".into(), 5).await.unwrap(), (5, true));
    assert_eq!(store.unread(chat(), "alice".into()).await.unwrap(), 1, "7");
    assert_eq!(store.unread(room("other"), "bob".into()).await.unwrap(), 1);

    // At most so many different reactions; more users with one already there is fine.
    let most = MAX_REACTIONS_PER_MESSAGE as u64;
    for n in 0..most {
        assert_eq!(change(store, 6, "alice", false, react(&format!("e{n}"), true), 40).await, done(10 + n, 0, 1));
    }
    let refused = change(store, 6, "alice", false, react("one too many", true), 41).await;
    assert_eq!(refused, Err(ChangeRefused::TooManyReactions(MAX_REACTIONS_PER_MESSAGE)));
    assert_eq!(change(store, 6, "bob", false, react("e0", true), 42).await, done(10 + most, 0, 2));
    assert_eq!(store.changed_since(chat(), 100, 0, 10).await.unwrap(), (vec![3, 2, 1, 6], false));

    state(store).await
}
