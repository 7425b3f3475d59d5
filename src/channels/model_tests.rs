//! Model-based test of the presence engine: random sequences of every event the world knows
//! (subscribe, unsubscribe, join, createChat, go_to_background, time passing, contacts linked
//! and unlinked, users deleted, graceful restart) over several users, devices and chats. After
//! every step, the view each subscription folded from the notes it received must equal the
//! visibility rules of behaviour.md computed from scratch, no note may be redundant (a `chat` for
//! a chat already listed, an `update_chat` that changes nothing, …), and the database changes
//! the world asked for must describe the same chats, members and windows.
//!
//! Cases: 256 by default (CI); `HANGIN_MODEL_CASES=20000 cargo test --lib model_tests` for more.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::world::{Change, Note, Out, Stored, World};
use crate::db::chats::ChatId;
use crate::db::users::{User, UserId};

const USERS: i64 = 5;
const WINDOW: i64 = 300;
const LIMIT: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Subscribe(i64),
    Unsubscribe(usize),
    Join(i64, usize),
    Create(usize),
    Background(usize),
    Wait(i64),
    Link(i64, i64),
    Unlink(i64, i64),
    Delete(i64),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let user = 1..=USERS;
    prop_oneof![
        4 => user.clone().prop_map(Step::Subscribe),
        2 => any::<usize>().prop_map(Step::Unsubscribe),
        4 => (user.clone(), any::<usize>()).prop_map(|(u, c)| Step::Join(u, c)),
        3 => any::<usize>().prop_map(Step::Create),
        1 => any::<usize>().prop_map(Step::Background),
        2 => (1..=2 * WINDOW).prop_map(Step::Wait),
        2 => (user.clone(), user.clone()).prop_map(|(a, b)| Step::Link(a, b)),
        1 => (user.clone(), user.clone()).prop_map(|(a, b)| Step::Unlink(a, b)),
        1 => user.prop_map(Step::Delete),
        1 => Just(Step::Restart),
    ]
}

fn profile(id: i64) -> User {
    User {
        id: UserId(id),
        uuid: format!("uuid-{id}"),
        number: format!("555000000{id}"),
        first_name: Some(format!("User{id}")),
        last_name: None,
        picture_key: None,
        device_token: None,
        background_until: None,
    }
}

/// What one `ChatsChannel` subscription has folded from its frames.
#[derive(Debug, Default, Clone, PartialEq)]
struct Fold {
    chats: BTreeMap<ChatId, Vec<UserId>>,
    contacts: BTreeSet<UserId>,
}

#[derive(Debug, Clone)]
struct TruthChat {
    starter: UserId,
    members: Vec<UserId>,
    ended: bool,
}

/// The rules of behaviour.md, kept the simple way: state, and views computed from scratch.
#[derive(Debug, Default, Clone)]
struct Truth {
    users: BTreeSet<UserId>,
    mutual: BTreeSet<(UserId, UserId)>,
    windows: BTreeMap<UserId, i64>,
    chats: BTreeMap<ChatId, TruthChat>,
}

impl Truth {
    fn mutual(&self, a: UserId, b: UserId) -> bool {
        self.mutual.contains(&(a.min(b), a.max(b)))
    }

    fn mutuals_of(&self, u: UserId) -> Vec<UserId> {
        self.users
            .iter()
            .copied()
            .filter(|m| self.mutual(u, *m))
            .collect()
    }

    fn online(&self, u: UserId, subs: &Subs) -> bool {
        subs.values().any(|(owner, _)| *owner == u) || self.windows.contains_key(&u)
    }

    fn online_members(&self, c: &TruthChat, subs: &Subs) -> Vec<UserId> {
        c.members
            .iter()
            .copied()
            .filter(|m| self.online(*m, subs))
            .collect()
    }

    fn sees(&self, v: UserId, id: ChatId, subs: &Subs) -> bool {
        let Some(c) = self.chats.get(&id).filter(|c| !c.ended) else {
            return false;
        };
        c.members.contains(&v)
            || self
                .online_members(c, subs)
                .iter()
                .any(|m| self.mutual(*m, v))
    }

    fn expected(&self, v: UserId, subs: &Subs) -> Fold {
        let mut fold = Fold::default();
        for (id, c) in &self.chats {
            if self.sees(v, *id, subs) {
                fold.chats.insert(*id, self.online_members(c, subs));
            }
        }
        for m in &self.users {
            if *m != v && self.mutual(v, *m) && self.online(*m, subs) {
                fold.contacts.insert(*m);
            }
        }
        fold
    }

    /// The invariant every event keeps: a chat with no online member has ended.
    fn end_orphans(&mut self, subs: &Subs) {
        let orphans: Vec<ChatId> = self
            .chats
            .iter()
            .filter(|(_, c)| !c.ended && self.online_members(c, subs).is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in orphans {
            self.chats.get_mut(&id).unwrap().ended = true;
        }
    }
}

/// What the world asked the database to store.
#[derive(Debug, Default, Clone)]
struct Stores {
    chats: BTreeMap<ChatId, (UserId, String, Vec<UserId>, bool)>,
    windows: BTreeMap<UserId, i64>,
}

impl Stores {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::CreateChat { id, starter, name } => {
                self.chats
                    .insert(*id, (*starter, name.clone(), vec![*starter], false));
            }
            Change::AddMember(id, user) => {
                let members = &mut self.chats.get_mut(id).expect("stored chat").2;
                if !members.contains(user) {
                    members.push(*user);
                }
            }
            Change::EndChat(id, _) => self.chats.get_mut(id).expect("stored chat").3 = true,
            Change::Window(user, Some(until)) => {
                self.windows.insert(*user, *until);
            }
            Change::Window(user, None) => {
                self.windows.remove(user);
            }
        }
    }

    fn stored(&self, truth: &Truth) -> Stored {
        Stored {
            users: truth.users.iter().map(|u| profile(u.0)).collect(),
            mutual_pairs: truth.mutual.iter().copied().collect(),
            live_chats: self
                .chats
                .iter()
                .filter(|(_, c)| !c.3)
                .map(|(id, c)| super::world::StoredChat {
                    id: *id,
                    starter: c.0,
                    name: c.1.clone(),
                    members: c.2.clone(),
                })
                .collect(),
            windows: self.windows.iter().map(|(u, t)| (*u, *t)).collect(),
            max_chat_id: self.chats.keys().map(|c| c.0).max().unwrap_or(0),
        }
    }
}

type Subs = BTreeMap<usize, (UserId, Fold)>;

struct Harness {
    world: World,
    truth: Truth,
    stores: Stores,
    subs: Subs,
    next_sub: usize,
    now: i64,
}

impl Harness {
    fn new(pairs: Vec<(i64, i64)>) -> Harness {
        let mut truth = Truth::default();
        for id in 1..=USERS {
            truth.users.insert(UserId(id));
        }
        for (a, b) in pairs {
            if a != b {
                truth.mutual.insert((UserId(a.min(b)), UserId(a.max(b))));
            }
        }
        let stores = Stores::default();
        let (world, outs) = World::restore(stores.stored(&truth), 0, WINDOW, LIMIT);
        let mut h = Harness {
            world,
            truth,
            stores,
            subs: BTreeMap::new(),
            next_sub: 0,
            now: 0,
        };
        h.deliver(outs).unwrap();
        h
    }

    /// Fold the notes into every subscription of their users; refuse redundant ones.
    fn deliver(&mut self, outs: Vec<Out>) -> Result<(), String> {
        for out in outs {
            match out {
                Out::Store(change) => self.stores.apply(&change),
                Out::Send { note, to } => {
                    for user in to {
                        let online = match &note {
                            Note::Chat(id) | Note::UpdateChat(id) => self.world.online_members(*id),
                            _ => Vec::new(),
                        };
                        for (_, (owner, fold)) in self.subs.iter_mut().filter(|(_, s)| s.0 == user)
                        {
                            fold_note(fold, &note, &online)
                                .map_err(|e| format!("user {} got {note:?}: {e}", owner.0))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn sub_key(&self, k: usize) -> Option<usize> {
        let keys: Vec<usize> = self.subs.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[k % keys.len()])
    }

    fn chat_id(&self, k: usize) -> Option<ChatId> {
        let ids: Vec<ChatId> = self.truth.chats.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[k % ids.len()])
    }

    /// As the engine does before an event about a user the world does not hold: their
    /// profile and mutual contacts as stored.
    fn admit(&mut self, user: UserId) {
        if !self.world.knows(user) {
            let mutuals = self.truth.mutuals_of(user);
            self.world.admit(user, profile(user.0), mutuals);
        }
    }

    fn unsubscribe(&mut self, key: usize) -> Result<(), String> {
        let (user, _) = self.subs.remove(&key).expect("live subscription");
        let outs = self.world.unsubscribe_chats(user, self.now);
        self.deliver(outs)
    }

    fn run(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Subscribe(u) => {
                let user = UserId(u);
                if !self.truth.users.contains(&user) {
                    return Ok(());
                }
                self.truth.windows.remove(&user);
                self.admit(user);
                let (snapshot, outs) = self.world.subscribe_chats(user);
                let key = self.next_sub;
                self.next_sub += 1;
                // The snapshot is computed after the change, as the engine transmits it.
                let mut fold = Fold::default();
                for id in snapshot.chats {
                    fold.chats.insert(id, self.world.online_members(id));
                }
                fold.contacts = snapshot.contacts_online.into_iter().collect();
                self.subs.insert(key, (user, fold));
                self.deliver(outs)?;
            }
            Step::Unsubscribe(k) => {
                if let Some(key) = self.sub_key(k) {
                    self.unsubscribe(key)?;
                }
            }
            Step::Join(u, k) => {
                let user = UserId(u);
                let Some(id) = self.chat_id(k) else {
                    return Ok(());
                };
                if !self.truth.users.contains(&user) {
                    return Ok(());
                }
                let allowed = self.truth.sees(user, id, &self.subs);
                self.admit(user);
                match self.world.join(user, id) {
                    Ok((joined, outs)) => {
                        if !allowed {
                            return Err(format!("user {u} joined chat {} it does not see", id.0));
                        }
                        let members = &mut self.truth.chats.get_mut(&id).unwrap().members;
                        if joined == members.contains(&user) {
                            return Err("join reported the wrong membership change".into());
                        }
                        if joined {
                            members.push(user);
                        } else if !outs.is_empty() {
                            return Err(format!("a member's re-join sent {outs:?}"));
                        }
                        self.deliver(outs)?;
                    }
                    Err(_) if allowed => {
                        return Err(format!("user {u} was refused chat {} it sees", id.0))
                    }
                    Err(_) => {}
                }
            }
            Step::Create(k) => {
                let Some(key) = self.sub_key(k) else {
                    return Ok(());
                };
                let user = self.subs[&key].0;
                let started = self
                    .truth
                    .chats
                    .values()
                    .filter(|c| !c.ended && c.starter == user)
                    .count();
                match self.world.create_chat(user, format!("chat by {}", user.0)) {
                    Ok((id, outs)) => {
                        if started >= LIMIT {
                            return Err("created a chat beyond the limit".into());
                        }
                        self.truth.chats.insert(
                            id,
                            TruthChat {
                                starter: user,
                                members: vec![user],
                                ended: false,
                            },
                        );
                        // own_chat to the creating subscription, chat to the creator's others.
                        let online = self.world.online_members(id);
                        for (_, (owner, fold)) in self.subs.iter_mut().filter(|(_, s)| s.0 == user)
                        {
                            fold_note(fold, &Note::Chat(id), &online)
                                .map_err(|e| format!("creator {} own_chat/chat: {e}", owner.0))?;
                        }
                        self.deliver(outs)?;
                    }
                    Err(_) if started < LIMIT => {
                        return Err("createChat refused under the limit".into())
                    }
                    Err(_) => {}
                }
            }
            Step::Background(k) => {
                let Some(key) = self.sub_key(k) else {
                    return Ok(());
                };
                let user = self.subs[&key].0;
                self.truth.windows.insert(user, self.now + WINDOW);
                let outs = self.world.go_to_background(user, self.now);
                self.deliver(outs)?;
                // The engine then closes every connection of the user.
                let keys: Vec<usize> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| s.0 == user)
                    .map(|(k, _)| *k)
                    .collect();
                for key in keys {
                    self.unsubscribe(key)?;
                }
            }
            Step::Wait(dt) => {
                self.now += dt;
                let now = self.now;
                self.truth.windows.retain(|_, until| *until > now);
                let outs = self.world.expire(now);
                self.deliver(outs)?;
            }
            Step::Link(a, b) | Step::Unlink(a, b) => {
                let (a, b) = (UserId(a), UserId(b));
                if a == b || !self.truth.users.contains(&a) || !self.truth.users.contains(&b) {
                    return Ok(());
                }
                let pair = (a.min(b), a.max(b));
                if matches!(step, Step::Link(..)) {
                    self.truth.mutual.insert(pair);
                } else {
                    self.truth.mutual.remove(&pair);
                }
                let mutuals = self.truth.mutuals_of(a);
                let outs = self
                    .world
                    .people_changed(vec![(a, Some((profile(a.0), mutuals)))], self.now);
                self.deliver(outs)?;
            }
            Step::Delete(u) => {
                let user = UserId(u);
                if !self.truth.users.remove(&user) {
                    return Ok(());
                }
                self.truth.mutual.retain(|(a, b)| *a != user && *b != user);
                self.truth.windows.remove(&user);
                // The user's connections are closed; their unsubscribes find nobody.
                self.subs.retain(|_, s| s.0 != user);
                let outs = self.world.people_changed(vec![(user, None)], self.now);
                for c in self.truth.chats.values_mut() {
                    c.members.retain(|m| *m != user);
                }
                self.deliver(outs)?;
                self.stores.windows.remove(&user);
                for c in self.stores.chats.values_mut() {
                    c.2.retain(|m| *m != user);
                }
            }
            Step::Restart => {
                // Graceful stop: everyone online goes to the background, then every connection
                // closes; the next start restores the world from what was stored.
                let outs = self.world.shutdown(self.now);
                for (user, _) in self.subs.values() {
                    self.truth.windows.insert(*user, self.now + WINDOW);
                }
                self.deliver(outs)?;
                let keys: Vec<usize> = self.subs.keys().copied().collect();
                for key in keys {
                    self.unsubscribe(key)?;
                }
                for c in self.truth.chats.values().filter(|c| !c.ended) {
                    for m in &c.members {
                        let w = self.truth.windows.entry(*m).or_insert(0);
                        *w = (*w).max(self.now + WINDOW);
                    }
                }
                let (world, outs) =
                    World::restore(self.stores.stored(&self.truth), self.now, WINDOW, LIMIT);
                self.world = world;
                self.deliver(outs)?;
            }
        }
        self.truth.end_orphans(&self.subs);
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        for (key, (user, fold)) in &self.subs {
            let expected = self.truth.expected(*user, &self.subs);
            if *fold != expected {
                return Err(format!(
                    "subscription {key} of user {}: folded {fold:?}, rules say {expected:?}",
                    user.0
                ));
            }
        }
        for (id, c) in &self.truth.chats {
            let stored = self.stores.chats.get(id).ok_or("chat not stored")?;
            if stored.3 != c.ended || stored.2 != c.members {
                return Err(format!("chat {} stored as {stored:?}, truth {c:?}", id.0));
            }
            if !c.ended && self.world.chat(*id).map(|w| &w.members) != Some(&c.members) {
                return Err(format!("chat {} members differ in the world", id.0));
            }
        }
        // The world holds exactly the present: online, or a member of a live chat.
        let present = self
            .truth
            .users
            .iter()
            .filter(|u| {
                self.truth.online(**u, &self.subs)
                    || self
                        .truth
                        .chats
                        .values()
                        .any(|c| !c.ended && c.members.contains(u))
            })
            .count();
        if self.world.held_count() != present {
            return Err(format!(
                "the world holds {} people, {present} are present",
                self.world.held_count()
            ));
        }
        if self.stores.windows != self.truth.windows {
            return Err(format!(
                "windows stored {:?}, truth {:?}",
                self.stores.windows, self.truth.windows
            ));
        }
        Ok(())
    }
}

/// Apply one note to a fold; a note that changes nothing is an error.
fn fold_note(fold: &mut Fold, note: &Note, online: &[UserId]) -> Result<(), String> {
    let ok = match note {
        Note::Chat(id) => fold.chats.insert(*id, online.to_vec()).is_none(),
        Note::UpdateChat(id) => match fold.chats.get_mut(id) {
            Some(list) if list.as_slice() != online => {
                *list = online.to_vec();
                true
            }
            _ => false,
        },
        Note::DeleteChat(id) => fold.chats.remove(id).is_some(),
        Note::ContactOnline(u) => fold.contacts.insert(*u),
        Note::ContactOffline(uuid) => {
            let id: i64 = uuid.trim_start_matches("uuid-").parse().expect("test uuid");
            fold.contacts.remove(&UserId(id))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("redundant (view was {fold:?})"))
    }
}

fn cases() -> u32 {
    std::env::var("HANGIN_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_view_follows_the_rules(
        pairs in proptest::collection::vec((1..=USERS, 1..=USERS), 0..8),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut h = Harness::new(pairs);
        for (i, s) in steps.iter().enumerate() {
            if let Err(e) = h.run(s) {
                return Err(TestCaseError::fail(format!("step {i} {s:?}: {e}")));
            }
        }
    }
}
