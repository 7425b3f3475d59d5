//! `hangin loadtest-users`: mint users, address books and access tokens straight into the
//! database for load tests (`tools/hangin-load`). Logging 10,000 users in through `/create` and
//! `/oauth/token` would measure argon2 and the rate limits, not the cable; this writes the same
//! rows the real paths write (through the same repository functions) in one transaction.

use rusqlite::Connection;
use serde::Serialize;

use crate::auth::clients;
use crate::db::{self, users::UserId, DbResult};
use crate::secret::{new_secret, sha256};

/// Who knows whom. Users are cut into consecutive groups of `group` users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Everyone in a group has everyone else of the group in their address book (mutual).
    Clique,
    /// The first user of a group and each other member are mutual; the others do not know
    /// each other (one speaker, many listeners, without a quadratic address book).
    Star,
}

#[derive(Debug, Clone)]
pub struct MintSpec {
    pub count: usize,
    pub group: usize,
    pub topology: Topology,
    /// Numbers are `first_number + i`, ten digits.
    pub first_number: u64,
    pub token_ttl_seconds: i64,
}

#[derive(Debug, Serialize)]
pub struct MintedUser {
    pub uuid: String,
    pub number: String,
    pub first_name: String,
    pub last_name: String,
    pub group: usize,
    pub token: String,
}

#[derive(Debug, Serialize)]
pub struct Minted {
    pub client_id: String,
    pub client_secret: String,
    pub users: Vec<MintedUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("group size must be at least 1")]
    EmptyGroup,
    #[error("numbers {first}..{last} do not fit in ten digits")]
    NumbersOutOfRange { first: u64, last: u64 },
    #[error("number {0} already belongs to a user; pick another --first-number")]
    Taken(String),
}

impl MintSpec {
    pub fn check(&self) -> Result<(), MintError> {
        if self.group == 0 {
            return Err(MintError::EmptyGroup);
        }
        let last = self.first_number + self.count as u64;
        if self.first_number < 1_000_000_000 || last > 9_999_999_999 {
            return Err(MintError::NumbersOutOfRange {
                first: self.first_number,
                last,
            });
        }
        Ok(())
    }

    /// Pairs (owner index, known index) of address-book entries.
    fn knows(&self, i: usize) -> Vec<usize> {
        let start = i / self.group * self.group;
        let end = (start + self.group).min(self.count);
        match self.topology {
            Topology::Clique => (start..end).filter(|j| *j != i).collect(),
            Topology::Star if i == start => (start + 1..end).collect(),
            Topology::Star => vec![start],
        }
    }
}

/// Insert the users (with names), their address books and one access token each.
pub fn mint(conn: &Connection, spec: &MintSpec) -> DbResult<Result<Minted, MintError>> {
    if let Err(e) = spec.check() {
        return Ok(Err(e));
    }
    let numbers: Vec<String> = (0..spec.count)
        // Stored as E.164, like every number the server saves (US numbers: +1 and ten digits).
        .map(|i| format!("+1{}", spec.first_number + i as u64))
        .collect();
    for number in &numbers {
        if db::users::by_number(conn, number)?.is_some() {
            return Ok(Err(MintError::Taken(number.clone())));
        }
    }
    let client = clients::create(conn, "loadtest")?;
    let client_row = db::clients::by_uid(conn, &client.client_id)?.expect("just created");
    let mut ids: Vec<UserId> = Vec::with_capacity(spec.count);
    let mut users = Vec::with_capacity(spec.count);
    let now = db::now_ms();
    for (i, number) in numbers.iter().enumerate() {
        let user = db::users::create(conn, number)?;
        let (first, last) = ("Load".to_string(), format!("User{i}"));
        db::users::update_names(conn, user.id, Some(&first), Some(&last))?;
        let token = new_secret();
        db::tokens::insert(
            conn,
            &db::tokens::NewToken {
                user_id: user.id,
                client_id: client_row.id,
                token_hash: &sha256(&token),
                refresh_hash: &sha256(&new_secret()),
                created_at: now,
                expires_in: spec.token_ttl_seconds,
                previous_token_id: None,
            },
        )?;
        ids.push(user.id);
        users.push(MintedUser {
            uuid: user.uuid,
            number: number.clone(),
            first_name: first,
            last_name: last,
            group: i / spec.group,
            token,
        });
    }
    // Address books after all users exist, so every entry links to its user (`contacts`).
    for (i, owner) in ids.iter().enumerate() {
        for j in spec.knows(i) {
            db::users::upsert_friend(conn, *owner, "Load", &format!("User{j}"), &numbers[j])?;
        }
    }
    Ok(Ok(Minted {
        client_id: client.client_id,
        client_secret: client.client_secret,
        users,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: usize, group: usize, topology: Topology) -> MintSpec {
        MintSpec {
            count,
            group,
            topology,
            first_number: 5_550_000_000,
            token_ttl_seconds: 3600,
        }
    }

    #[test]
    fn groups_are_cliques_or_stars() {
        let clique = spec(7, 3, Topology::Clique);
        assert_eq!(clique.knows(0), vec![1, 2]);
        assert_eq!(clique.knows(4), vec![3, 5]);
        assert_eq!(clique.knows(6), Vec::<usize>::new()); // a group of one
        let star = spec(7, 4, Topology::Star);
        assert_eq!(star.knows(0), vec![1, 2, 3]);
        assert_eq!(star.knows(2), vec![0]);
        assert_eq!(star.knows(5), vec![4]);
    }

    #[test]
    fn minted_users_are_mutual_and_can_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        db::migrate(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let minted = mint(&conn, &spec(6, 3, Topology::Star)).unwrap().unwrap();
        assert_eq!(minted.users.len(), 6);
        let id = |n: &str| db::users::by_number(&conn, n).unwrap().unwrap().id;
        let (hub, leaf, other) = (
            id(&minted.users[0].number),
            id(&minted.users[1].number),
            id(&minted.users[2].number),
        );
        assert!(db::users::are_mutual(&conn, hub, leaf).unwrap());
        assert!(!db::users::are_mutual(&conn, leaf, other).unwrap());
        let row = db::tokens::by_access_hash(&conn, &sha256(&minted.users[1].token))
            .unwrap()
            .unwrap();
        assert_eq!(row.user_id, leaf);
        // Numbers are unique: minting the same range again is refused, not half-done.
        assert!(matches!(
            mint(&conn, &spec(6, 3, Topology::Star)).unwrap(),
            Err(MintError::Taken(_))
        ));
    }
}
