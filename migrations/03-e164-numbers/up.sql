-- Numbers are stored in E.164 from now on (docs/behaviour.md "Numbers"). Until this migration
-- every stored number was the original's 10-digit US form, which is +1 and those digits. The
-- GLOB keeps the step exact and idempotent: only plain 10-digit values change.
UPDATE users     SET number = '+1' || number WHERE number GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]';
UPDATE friends   SET number = '+1' || number WHERE number GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]';
UPDATE otp_codes SET number = '+1' || number WHERE number GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]';
UPDATE bans      SET number = '+1' || number WHERE number GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]';
