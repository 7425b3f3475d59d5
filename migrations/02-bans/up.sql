-- Numbers the operator banned (`hangin user ban`): no OTP code is issued to them. Keyed by the
-- number in the same stored form as users.number, so a ban also covers a number that never
-- logged in, and survives the user's deletion.
CREATE TABLE bans (
    number      TEXT    PRIMARY KEY,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
