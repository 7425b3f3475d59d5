//! Presence, visibility and chat membership as a pure state machine (behaviour.md "Presence",
//! "Chats", "Background mode", "Contacts change live"). No I/O, no async, no clock: every event
//! is a method that takes the time it needs and returns what must happen because of it — the
//! notes to send (`Out::Send`) and the database changes to commit (`Out::Store`). The engine
//! applies those under its lock with non-blocking sends and queued writes, so the lock is never
//! held across I/O.
//!
//! Every event that can change what somebody sees takes a view of the chats it touches before
//! the change and after it, and derives the notes from the difference: `chat` to those who newly
//! see a chat, `update_chat` to those who saw it and see it changed, `delete_chat` to those who
//! no longer see it — so nobody gets two notes for one change, or one when nothing changed.
//!
//! The world holds only the people who matter to somebody's view right now: those online and
//! the members of live chats ("present"), with their mutual contacts among the present. Anybody
//! else affects no view, so a server with 10,000 accounts and nobody online holds nobody. Before
//! an event about an absent user, the engine reads their profile and contacts and calls
//! [`World::admit`]; whoever is offline and in no live chat after an event is let go again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::db::chats::ChatId;
use crate::db::users::{User, UserId};

/// Unix milliseconds.
pub type Ms = i64;

/// A note for the `ChatsChannel` subscriptions of users (rendered once by the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// `chat`: the chat as it is after the event (the viewer newly sees it).
    Chat(ChatId),
    /// `update_chat`: the chat as it is after the event (the viewer saw it before).
    UpdateChat(ChatId),
    DeleteChat(ChatId),
    ContactOnline(UserId),
    /// `contact_offline` carries the uuid (the user may be gone from the world by then).
    ContactOffline(String),
}

/// A change the database must record, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateChat {
        id: ChatId,
        starter: UserId,
        name: String,
    },
    AddMember(ChatId, UserId),
    EndChat(ChatId, Ms),
    /// Open (`Some(until)`) or close a background window.
    Window(UserId, Option<Ms>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Send { note: Note, to: Vec<UserId> },
    Store(Change),
}

/// What a new `ChatsChannel` subscription is transmitted: every chat the user sees, then the
/// user's online mutual contacts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub chats: Vec<ChatId>,
    pub contacts_online: Vec<UserId>,
}

/// Why a join or a new chat was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The chat does not exist, has ended, or the user does not see it.
    NotVisible,
    /// The user already started `limit` live chats.
    TooManyChats { limit: usize },
}

/// A person's state after a change: their profile and mutual contacts, or `None` when the
/// user was deleted.
pub type PersonState = (UserId, Option<(User, Vec<UserId>)>);

/// What the database holds at start (see [`World::restore`]).
#[derive(Debug, Default)]
pub struct Stored {
    /// The users present at start: those with an open background window and the members of
    /// live chats (others may be given too; they are let go).
    pub users: Vec<User>,
    /// Mutual contact pairs among `users`, each once.
    pub mutual_pairs: Vec<(UserId, UserId)>,
    /// Live chats with their members in join order.
    pub live_chats: Vec<StoredChat>,
    /// Open background windows.
    pub windows: Vec<(UserId, Ms)>,
    /// The largest chat id ever used (ended chats included).
    pub max_chat_id: i64,
}

#[derive(Debug, Clone)]
pub struct StoredChat {
    pub id: ChatId,
    pub starter: UserId,
    pub name: String,
    pub members: Vec<UserId>,
}

/// One person as the world knows them.
#[derive(Debug)]
struct Person {
    profile: User,
    mutuals: BTreeSet<UserId>,
    /// `ChatsChannel` subscriptions over all the user's connections.
    subscriptions: u32,
    window_until: Option<Ms>,
    /// Live chats the user is a member of.
    chats: BTreeSet<ChatId>,
}

impl Person {
    fn new(profile: User) -> Person {
        Person {
            profile,
            mutuals: BTreeSet::new(),
            subscriptions: 0,
            window_until: None,
            chats: BTreeSet::new(),
        }
    }

    fn online(&self) -> bool {
        self.subscriptions > 0 || self.window_until.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct LiveChat {
    pub name: String,
    pub starter: UserId,
    /// In join order; the `users` list of the chat object keeps this order.
    pub members: Vec<UserId>,
}

/// A chat as seen at one moment: its online members and who receives notes about it.
#[derive(Debug, Clone, PartialEq)]
struct View {
    online: Vec<UserId>,
    receivers: BTreeSet<UserId>,
}

#[derive(Debug)]
pub struct World {
    /// The present: online, or a member of a live chat (and, within one event, someone
    /// admitted for it). Mutual contact sets hold present people only.
    people: HashMap<UserId, Person>,
    /// People who may have stopped being present during the current event (see `settle`).
    leaving: Vec<UserId>,
    chats: BTreeMap<ChatId, LiveChat>,
    next_chat_id: i64,
    window_ms: Ms,
    live_chats_per_user: usize,
}

impl World {
    pub fn new(window_ms: Ms, live_chats_per_user: usize) -> World {
        World {
            people: HashMap::new(),
            leaving: Vec::new(),
            chats: BTreeMap::new(),
            next_chat_id: 1,
            window_ms,
            live_chats_per_user,
        }
    }

    /// Rebuild the world from the database. A restart counts as everyone going to the
    /// background: members of live chats without an open window get one, so the chats stay live
    /// for clients that reconnect.
    pub fn restore(
        stored: Stored,
        now: Ms,
        window_ms: Ms,
        live_chats_per_user: usize,
    ) -> (World, Vec<Out>) {
        let mut world = World::new(window_ms, live_chats_per_user);
        world.next_chat_id = stored.max_chat_id + 1;
        for user in stored.users {
            world.people.insert(user.id, Person::new(user));
        }
        for (a, b) in stored.mutual_pairs {
            world.link(a, b);
        }
        for (user, until) in stored.windows {
            if let Some(p) = world.people.get_mut(&user) {
                p.window_until = Some(until);
            }
        }
        let mut outs = Vec::new();
        for chat in stored.live_chats {
            let members: Vec<UserId> = chat
                .members
                .into_iter()
                .filter(|m| world.people.contains_key(m))
                .collect();
            for m in &members {
                let p = world.people.get_mut(m).expect("filtered above");
                p.chats.insert(chat.id);
                if p.window_until.is_none_or(|until| until < now + window_ms) {
                    p.window_until = Some(now + window_ms);
                    outs.push(Out::Store(Change::Window(*m, Some(now + window_ms))));
                }
            }
            if members.is_empty() {
                outs.push(Out::Store(Change::EndChat(chat.id, now)));
                continue;
            }
            world.chats.insert(
                chat.id,
                LiveChat {
                    name: chat.name,
                    starter: chat.starter,
                    members,
                },
            );
        }
        world.leaving = world.people.keys().copied().collect();
        world.settle();
        (world, outs)
    }

    // ---- questions ------------------------------------------------------------------------

    /// Is `user` held (present)? If not, an event about them needs [`World::admit`] first.
    pub fn knows(&self, user: UserId) -> bool {
        self.people.contains_key(&user)
    }

    /// How many people are held: the present (for the memory bound in tests and `status`).
    pub fn held_count(&self) -> usize {
        self.people.len()
    }

    /// Make an absent user present for the event that follows, with their profile and mutual
    /// contacts as the database holds them after every change applied so far. Changes no view
    /// (they are offline and in no live chat), so it sends nothing; an event that leaves them
    /// so lets them go again.
    pub fn admit(&mut self, user: UserId, profile: User, mutuals: Vec<UserId>) {
        if self.people.contains_key(&user) {
            return;
        }
        self.people.insert(user, Person::new(profile));
        for m in mutuals {
            self.link(user, m);
        }
        self.leaving.push(user);
    }

    /// Does an absent viewer with these mutual contacts see the live chat `id`? (An absent
    /// user is in no live chat, so only through an online member.)
    pub fn seen_through(&self, id: ChatId, mutuals: &[UserId]) -> bool {
        self.chats.get(&id).is_some_and(|chat| {
            chat.members
                .iter()
                .any(|m| self.is_online(*m) && mutuals.contains(m))
        })
    }

    pub fn profile(&self, user: UserId) -> Option<&User> {
        self.people.get(&user).map(|p| &p.profile)
    }

    pub fn chat(&self, id: ChatId) -> Option<&LiveChat> {
        self.chats.get(&id)
    }

    pub fn is_online(&self, user: UserId) -> bool {
        self.people.get(&user).is_some_and(Person::online)
    }

    pub fn in_background(&self, user: UserId) -> bool {
        self.people
            .get(&user)
            .is_some_and(|p| p.window_until.is_some())
    }

    pub fn online_count(&self) -> usize {
        self.people.values().filter(|p| p.online()).count()
    }

    pub fn live_chat_count(&self) -> usize {
        self.chats.len()
    }

    /// The chat's online members, in join order.
    pub fn online_members(&self, id: ChatId) -> Vec<UserId> {
        self.chats
            .get(&id)
            .map(|c| {
                c.members
                    .iter()
                    .copied()
                    .filter(|m| self.is_online(*m))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Does `viewer` see the live chat `id`? (member, or an online member is a mutual contact)
    pub fn sees(&self, viewer: UserId, id: ChatId) -> bool {
        let Some(chat) = self.chats.get(&id) else {
            return false;
        };
        chat.members.iter().any(|m| {
            *m == viewer
                || (self.is_online(*m)
                    && self
                        .people
                        .get(m)
                        .is_some_and(|p| p.mutuals.contains(&viewer)))
        })
    }

    /// The earliest open background window, for the sweeper's next wake-up.
    pub fn next_deadline(&self) -> Option<Ms> {
        self.people.values().filter_map(|p| p.window_until).min()
    }

    fn snapshot(&self, user: UserId) -> Snapshot {
        let Some(person) = self.people.get(&user) else {
            return Snapshot::default();
        };
        let mut chats: BTreeSet<ChatId> = person.chats.clone();
        for m in &person.mutuals {
            if let Some(contact) = self.people.get(m).filter(|c| c.online()) {
                chats.extend(contact.chats.iter().copied());
            }
        }
        Snapshot {
            chats: chats.into_iter().filter(|c| self.sees(user, *c)).collect(),
            contacts_online: person
                .mutuals
                .iter()
                .copied()
                .filter(|m| self.is_online(*m))
                .collect(),
        }
    }

    /// Online members and the users with a `ChatsChannel` subscription who see the chat.
    fn view(&self, id: ChatId) -> Option<View> {
        let chat = self.chats.get(&id)?;
        let online = self.online_members(id);
        let mut receivers = BTreeSet::new();
        for m in &chat.members {
            if self.people.get(m).is_some_and(|p| p.subscriptions > 0) {
                receivers.insert(*m);
            }
        }
        for m in &online {
            if let Some(p) = self.people.get(m) {
                receivers.extend(
                    p.mutuals
                        .iter()
                        .copied()
                        .filter(|v| self.people.get(v).is_some_and(|q| q.subscriptions > 0)),
                );
            }
        }
        Some(View { online, receivers })
    }

    fn views(&self, chats: &BTreeSet<ChatId>) -> Vec<(ChatId, Option<View>)> {
        chats.iter().map(|c| (*c, self.view(*c))).collect()
    }

    /// Mutual contacts of `user` who have a `ChatsChannel` subscription.
    fn receiving_mutuals(&self, user: UserId) -> Vec<UserId> {
        self.people
            .get(&user)
            .map(|p| {
                p.mutuals
                    .iter()
                    .copied()
                    .filter(|m| self.people.get(m).is_some_and(|q| q.subscriptions > 0))
                    .collect()
            })
            .unwrap_or_default()
    }

    // ---- events ---------------------------------------------------------------------------

    /// A `ChatsChannel` subscription: the snapshot for it, then the user goes online unless
    /// they already were; subscribing during a background window closes it silently. The
    /// subscribing user's other subscriptions get nothing: their view does not change.
    pub fn subscribe_chats(&mut self, user: UserId) -> (Snapshot, Vec<Out>) {
        let mut outs = Vec::new();
        let Some(person) = self.people.get(&user) else {
            return (Snapshot::default(), outs);
        };
        let was_online = person.online();
        let touched = person.chats.clone();
        let before = if was_online {
            Vec::new()
        } else {
            self.views(&touched)
        };
        let person = self.people.get_mut(&user).expect("checked above");
        person.subscriptions += 1;
        if person.window_until.take().is_some() {
            outs.push(Out::Store(Change::Window(user, None)));
        }
        if !was_online {
            let to = self.receiving_mutuals(user);
            send(&mut outs, Note::ContactOnline(user), to);
            self.diff(before, Some(user), 0, &mut outs);
        }
        self.settle();
        (self.snapshot(user), outs)
    }

    /// A `ChatsChannel` subscription ended (unsubscribe or connection closed): the last one
    /// takes the user offline unless a background window is open.
    pub fn unsubscribe_chats(&mut self, user: UserId, now: Ms) -> Vec<Out> {
        let mut outs = Vec::new();
        let Some(person) = self.people.get_mut(&user) else {
            return outs;
        };
        if person.subscriptions == 0 {
            // Already taken offline (an admin's ban or sign-out): nothing left to announce.
            return outs;
        }
        if person.subscriptions > 1 || person.window_until.is_some() {
            person.subscriptions = person.subscriptions.saturating_sub(1);
            return outs;
        }
        let before = self.views(&self.people[&user].chats.clone());
        self.mark_offline(user, &mut outs);
        // The user no longer receives anything: their own view is not updated.
        self.diff(before, Some(user), now, &mut outs);
        self.settle();
        outs
    }

    /// An admin banned or signed out `user` (`src/admin/`; their connections are closed): they
    /// go offline now, also from an open background window, exactly as in Presence.
    pub fn take_offline(&mut self, user: UserId, now: Ms) -> Vec<Out> {
        let mut outs = Vec::new();
        if !self.is_online(user) {
            return outs;
        }
        let had_window = self.people[&user].window_until.is_some();
        let before = self.views(&self.people[&user].chats.clone());
        self.mark_offline(user, &mut outs);
        if had_window {
            outs.push(Out::Store(Change::Window(user, None)));
        }
        self.diff(before, Some(user), now, &mut outs);
        self.settle();
        outs
    }

    /// `user` goes offline: no subscription, no window; online mutual contacts are told. The
    /// caller re-evaluates the user's chats.
    fn mark_offline(&mut self, user: UserId, outs: &mut Vec<Out>) {
        let to = self.receiving_mutuals(user);
        let person = self.people.get_mut(&user).expect("caller checked");
        person.subscriptions = 0;
        person.window_until = None;
        let uuid = person.profile.uuid.clone();
        send(outs, Note::ContactOffline(uuid), to);
        self.leaving.push(user);
    }

    /// Subscribing to a chat joins it: allowed when the user sees it. Returns whether the user
    /// became a member (a member re-joining changes nothing and sends nothing).
    pub fn join(&mut self, user: UserId, id: ChatId) -> Result<(bool, Vec<Out>), Refusal> {
        let joined = self.join_now(user, id);
        self.settle();
        joined
    }

    fn join_now(&mut self, user: UserId, id: ChatId) -> Result<(bool, Vec<Out>), Refusal> {
        let mut outs = Vec::new();
        if !self.people.contains_key(&user) || !self.sees(user, id) {
            return Err(Refusal::NotVisible);
        }
        if self.chats[&id].members.contains(&user) {
            return Ok((false, outs));
        }
        let before = self.views(&BTreeSet::from([id]));
        self.chats.get_mut(&id).expect("seen").members.push(user);
        self.people.get_mut(&user).expect("known").chats.insert(id);
        outs.push(Out::Store(Change::AddMember(id, user)));
        self.diff(before, None, 0, &mut outs);
        Ok((true, outs))
    }

    /// `createChat`: a new live chat with its starter as the only member. The creating
    /// subscription is sent `own_chat` by the caller; every other subscription that now sees
    /// the chat — the starter's other devices included — is sent `chat` (in the outs).
    pub fn create_chat(
        &mut self,
        user: UserId,
        name: String,
    ) -> Result<(ChatId, Vec<Out>), Refusal> {
        let created = self.create_chat_now(user, name);
        self.settle();
        created
    }

    fn create_chat_now(
        &mut self,
        user: UserId,
        name: String,
    ) -> Result<(ChatId, Vec<Out>), Refusal> {
        let mut outs = Vec::new();
        if !self.people.contains_key(&user) {
            return Err(Refusal::NotVisible);
        }
        let started = self.chats.values().filter(|c| c.starter == user).count();
        if started >= self.live_chats_per_user {
            return Err(Refusal::TooManyChats {
                limit: self.live_chats_per_user,
            });
        }
        let id = ChatId(self.next_chat_id);
        self.next_chat_id += 1;
        outs.push(Out::Store(Change::CreateChat {
            id,
            starter: user,
            name: name.clone(),
        }));
        self.chats.insert(
            id,
            LiveChat {
                name,
                starter: user,
                members: vec![user],
            },
        );
        self.people.get_mut(&user).expect("known").chats.insert(id);
        // The starter's subscriptions are told by the caller (`own_chat` / `chat`).
        let before = vec![(id, None)];
        self.diff(before, Some(user), 0, &mut outs);
        Ok((id, outs))
    }

    /// `go_to_background`: the window opens (the caller then closes the user's connections,
    /// whose unsubscribes leave the user online through the window).
    pub fn go_to_background(&mut self, user: UserId, now: Ms) -> Vec<Out> {
        let until = now + self.window_ms;
        let outs = match self.people.get_mut(&user) {
            Some(p) => {
                p.window_until = Some(until);
                vec![Out::Store(Change::Window(user, Some(until)))]
            }
            None => Vec::new(),
        };
        self.settle();
        outs
    }

    /// Close every window that ended by `now`; users without a subscription go offline. All
    /// of them in one change: a chat whose members' windows end together is updated once.
    pub fn expire(&mut self, now: Ms) -> Vec<Out> {
        let mut expired: Vec<UserId> = self
            .people
            .iter()
            .filter(|(_, p)| p.window_until.is_some_and(|u| u <= now))
            .map(|(id, _)| *id)
            .collect();
        expired.sort();
        let mut outs = Vec::new();
        let mut touched = BTreeSet::new();
        for user in &expired {
            let p = &self.people[user];
            if p.subscriptions == 0 {
                touched.extend(p.chats.iter().copied());
            }
        }
        let before = self.views(&touched);
        for user in expired {
            outs.push(Out::Store(Change::Window(user, None)));
            let person = self.people.get_mut(&user).expect("listed");
            if person.subscriptions > 0 {
                person.window_until = None;
            } else {
                self.mark_offline(user, &mut outs);
            }
        }
        self.diff(before, None, now, &mut outs);
        self.settle();
        outs
    }

    /// Graceful shutdown: everyone online without a window gets one (behaviour.md: a restart
    /// is everyone going to the background), so no chat ends while the connections close.
    pub fn shutdown(&mut self, now: Ms) -> Vec<Out> {
        let until = now + self.window_ms;
        let mut outs = Vec::new();
        let mut ids: Vec<UserId> = self.people.keys().copied().collect();
        ids.sort();
        for id in ids {
            let p = self.people.get_mut(&id).expect("listed");
            if p.subscriptions > 0 && p.window_until.is_none_or(|u| u < until) {
                p.window_until = Some(until);
                outs.push(Out::Store(Change::Window(id, Some(until))));
            }
        }
        outs
    }

    /// Users were created, renamed or deleted (`None`), or their mutual contacts changed: the
    /// new state of each, read after the change was committed. New mutual pairs who are both
    /// online see each other come online and see the chats the pair makes visible; removed
    /// pairs the reverse; a deleted user goes offline and leaves every chat. One change: each
    /// chat is re-evaluated once.
    pub fn people_changed(&mut self, updates: Vec<PersonState>, now: Ms) -> Vec<Out> {
        let mut outs = Vec::new();
        let mut touched = BTreeSet::new();
        for (user, update) in &updates {
            let mut involved: Vec<UserId> = vec![*user];
            if let Some(p) = self.people.get(user) {
                involved.extend(p.mutuals.iter().copied());
            }
            if let Some((_, mutuals)) = update {
                involved.extend(mutuals.iter().copied());
            }
            for u in involved {
                if let Some(p) = self.people.get(&u) {
                    touched.extend(p.chats.iter().copied());
                }
            }
        }
        let before = self.views(&touched);
        for (user, update) in updates {
            match update {
                Some((profile, mutuals)) => self.set_person(user, profile, mutuals, &mut outs),
                None => self.forget(user, &mut outs),
            }
        }
        self.diff(before, None, now, &mut outs);
        self.settle();
        outs
    }

    fn set_person(
        &mut self,
        user: UserId,
        profile: User,
        mutuals: Vec<UserId>,
        outs: &mut Vec<Out>,
    ) {
        // An absent user matters to no view: they are read afresh when they come back.
        let Some(p) = self.people.get_mut(&user) else {
            return;
        };
        p.profile = profile;
        let new: BTreeSet<UserId> = mutuals
            .into_iter()
            .filter(|m| *m != user && self.people.contains_key(m))
            .collect();
        let old = self.people[&user].mutuals.clone();
        for other in new.difference(&old) {
            self.pair_changed(user, *other, true, outs);
        }
        for other in old.difference(&new) {
            self.pair_changed(user, *other, false, outs);
        }
    }

    /// `a` and `b` become (or stop being) mutual contacts; when both are online each is told
    /// about the other. Chats are re-evaluated by the caller.
    fn pair_changed(&mut self, a: UserId, b: UserId, linked: bool, outs: &mut Vec<Out>) {
        if linked {
            self.link(a, b);
        } else {
            self.unlink(a, b);
        }
        if !(self.is_online(a) && self.is_online(b)) {
            return;
        }
        for (to, about) in [(a, b), (b, a)] {
            if self.people[&to].subscriptions > 0 {
                let note = if linked {
                    Note::ContactOnline(about)
                } else {
                    Note::ContactOffline(self.people[&about].profile.uuid.clone())
                };
                send(outs, note, vec![to]);
            }
        }
    }

    fn link(&mut self, a: UserId, b: UserId) {
        if a == b || !self.people.contains_key(&a) || !self.people.contains_key(&b) {
            return;
        }
        self.people.get_mut(&a).expect("checked").mutuals.insert(b);
        self.people.get_mut(&b).expect("checked").mutuals.insert(a);
    }

    fn unlink(&mut self, a: UserId, b: UserId) {
        if let Some(p) = self.people.get_mut(&a) {
            p.mutuals.remove(&b);
        }
        if let Some(p) = self.people.get_mut(&b) {
            p.mutuals.remove(&a);
        }
    }

    /// A deleted user: offline first (as if their last connection went), then out of every
    /// chat and contact list. Chats are re-evaluated by the caller.
    fn forget(&mut self, user: UserId, outs: &mut Vec<Out>) {
        if !self.people.contains_key(&user) {
            return;
        }
        if self.is_online(user) {
            self.mark_offline(user, outs);
        }
        let person = self.people.remove(&user).expect("present");
        for chat in person.chats {
            if let Some(c) = self.chats.get_mut(&chat) {
                c.members.retain(|m| *m != user);
            }
        }
        for m in person.mutuals {
            if let Some(p) = self.people.get_mut(&m) {
                p.mutuals.remove(&user);
            }
        }
    }

    /// Compare each chat's view `before` with its view now and send the differences; a chat
    /// left without an online member ends. `exclude` is a user who is being sent a snapshot
    /// instead of notes.
    fn diff(
        &mut self,
        before: Vec<(ChatId, Option<View>)>,
        exclude: Option<UserId>,
        now: Ms,
        outs: &mut Vec<Out>,
    ) {
        for (id, old) in before {
            let old_receivers = old
                .as_ref()
                .map(|v| v.receivers.clone())
                .unwrap_or_default();
            let Some(new) = self.view(id) else { continue };
            let keep = |u: &UserId| Some(*u) != exclude;
            if new.online.is_empty() {
                self.end_chat(id, now, outs);
                send(
                    outs,
                    Note::DeleteChat(id),
                    old_receivers.iter().copied().filter(keep).collect(),
                );
                continue;
            }
            let changed = old.as_ref().is_none_or(|o| o.online != new.online);
            let (mut fresh, mut updated) = (Vec::new(), Vec::new());
            for v in new.receivers.iter().copied().filter(keep) {
                if !old_receivers.contains(&v) {
                    fresh.push(v);
                } else if changed {
                    updated.push(v);
                }
            }
            let gone: Vec<UserId> = old_receivers
                .difference(&new.receivers)
                .copied()
                .filter(keep)
                .collect();
            send(outs, Note::Chat(id), fresh);
            send(outs, Note::UpdateChat(id), updated);
            send(outs, Note::DeleteChat(id), gone);
        }
    }

    fn end_chat(&mut self, id: ChatId, now: Ms, outs: &mut Vec<Out>) {
        if let Some(chat) = self.chats.remove(&id) {
            for m in chat.members {
                if let Some(p) = self.people.get_mut(&m) {
                    p.chats.remove(&id);
                    self.leaving.push(m);
                }
            }
            outs.push(Out::Store(Change::EndChat(id, now)));
        }
    }
}

impl World {
    /// Let go of everyone listed in `leaving` who is now offline and in no live chat: they
    /// matter to no view until they come back (and are admitted afresh then).
    fn settle(&mut self) {
        for user in std::mem::take(&mut self.leaving) {
            let Some(p) = self.people.get(&user) else {
                continue;
            };
            if p.online() || !p.chats.is_empty() {
                continue;
            }
            let person = self.people.remove(&user).expect("present");
            for m in person.mutuals {
                if let Some(p) = self.people.get_mut(&m) {
                    p.mutuals.remove(&user);
                }
            }
        }
    }
}

fn send(outs: &mut Vec<Out>, note: Note, to: Vec<UserId>) {
    if !to.is_empty() {
        outs.push(Out::Send { note, to });
    }
}
