"""Stand-in for the harness module `client` that ../shared/conformance/test_chat_channel.py
imports but the shared suite does not ship yet. Built only from the shipped hangin_client.py, so
the tests in that file run against the same wire rules. Used only when the suite lacks client.py."""
import time

from hangin_client import Cable, chats_identifier, contact_of, event_key  # noqa: F401

CHATS = chats_identifier()


def chat_identifier(chat_id, numeric=False):
    if numeric:
        return '{"channel":"ChatChannel","id":%d}' % int(chat_id)
    return '{"channel":"ChatChannel", "id":"%s"}' % chat_id


def by_uuid(users):
    return sorted(users, key=lambda u: u["uuid"])


def key(name):
    return event_key(name)


def is_payload(name, identifier=None):
    wire_key = key(name)

    def pred(frame):
        msg = frame.get("message")
        if not isinstance(msg, dict) or wire_key not in msg:
            return False
        return identifier is None or frame.get("identifier") == identifier

    return pred


class ShimCable(Cable):
    """hangin_client.Cable with the method names test_chat_channel.py uses."""

    def next_frame(self, predicate, what="a matching frame", timeout=None):
        if timeout is None:
            return self.next(predicate, what=what)
        return self.next(predicate, timeout=timeout, what=what)

    def assert_no_frame(self, predicate, within=1.0):
        if within == 0:
            for f in self.backlog:
                assert not predicate(f), f"unexpected frame: {f!r}"
            return
        self.none(predicate, within=within)

    def subscribe(self, identifier, expect="confirm_subscription"):
        self.command("subscribe", identifier)
        f = self.next(lambda f: f.get("identifier") == identifier and f.get("type") in
                      ("confirm_subscription", "reject_subscription"), what=f"answer to subscribing {identifier}")
        assert f == {"identifier": identifier, "type": expect}, f"got {f!r}"
        return identifier

    def unsubscribe(self, identifier):
        self.command("unsubscribe", identifier)


class Hangin:
    """The `hangin` fixture: users and online connections on the suite's server."""

    def __init__(self, api):
        self.api = api
        self.cables = []

    def sign_up(self, first_name, last_name):
        return self.api.sign_up(first_name=first_name, last_name=last_name)

    def befriend(self, a, b):
        self.api.mutual(a, b)

    def online(self, user):
        c = ShimCable(self.api, user.access_token)
        c.subscribe(CHATS)
        self.cables.append(c)
        return c

    def close(self):
        for c in self.cables:
            c.close()
        time.sleep(0.05)
