// The official @rails/actioncable client, unmodified, against a running hangin server.
// Env: HANGIN_CABLE_URL (ws://host:port/cable), TOKEN_A, TOKEN_B, UUID_A, UUID_B.
// Exits 0 when every expectation held, 1 otherwise (with the reason on stderr).
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { adapters, createConsumer } from "@rails/actioncable";

// The client is written for browsers: give it a WebSocket and the window event hooks it uses.
adapters.WebSocket = WebSocket;
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
globalThis.document ??= { visibilityState: "visible" };

const url = process.env.HANGIN_CABLE_URL;
const deadline = setTimeout(() => fail("timed out"), 15000);

function fail(why) {
  console.error(`actioncable client test failed: ${why}`);
  process.exit(1);
}

/** A subscription whose received payloads can be awaited by key. */
function subscribe(consumer, params) {
  const inbox = [];
  const waiters = [];
  let confirmed;
  const ready = new Promise((resolve, reject) => {
    confirmed = { resolve, reject };
  });
  const subscription = consumer.subscriptions.create(params, {
    connected() { confirmed.resolve(); },
    rejected() { confirmed.reject(new Error(`rejected: ${JSON.stringify(params)}`)); },
    received(data) {
      inbox.push(data);
      for (const w of waiters.splice(0)) w();
    },
  });
  async function next(key) {
    for (;;) {
      const i = inbox.findIndex((m) => key in m);
      if (i >= 0) return inbox.splice(i, 1)[0][key];
      await new Promise((r) => waiters.push(r));
    }
  }
  return { subscription, ready, next };
}

async function main() {
  const a = createConsumer(`${url}?access_token=${process.env.TOKEN_A}`);
  const b = createConsumer(`${url}?access_token=${process.env.TOKEN_B}`);

  const chatsB = subscribe(b, { channel: "ChatsChannel" });
  await chatsB.ready;
  assert.deepEqual(await chatsB.next("chats"), []);
  const chatsA = subscribe(a, { channel: "ChatsChannel" });
  await chatsA.ready;
  assert.deepEqual(await chatsA.next("chats"), []);
  const onlineForA = await chatsA.next("contacts_online");
  assert.deepEqual(onlineForA.map((c) => c.uuid), [process.env.UUID_B]);
  assert.equal((await chatsB.next("contact_online")).uuid, process.env.UUID_A);

  chatsA.subscription.perform("createChat", { name: "From @rails/actioncable" });
  const own = await chatsA.next("own_chat");
  assert.equal(own.name, "From @rails/actioncable");
  assert.deepEqual(await chatsB.next("chat"), own);

  const roomB = subscribe(b, { channel: "ChatChannel", id: own.id });
  await roomB.ready;
  assert.deepEqual(await roomB.next("messages"), []);
  const roomA = subscribe(a, { channel: "ChatChannel", id: String(own.id) });
  await roomA.ready;
  await roomA.next("messages");

  roomB.subscription.perform("speak", { body: "hello from node", kind: "text", status: "sent" });
  const seenByA = await roomA.next("message");
  const seenByB = await roomB.next("message");
  assert.equal(seenByA.body, "hello from node");
  assert.equal(seenByA.user_uuid, process.env.UUID_B);
  assert.deepEqual(seenByB, seenByA);

  // The protocol the client negotiated.
  assert.equal(a.connection.getProtocol(), "actioncable-v1-json");
  a.disconnect();
  b.disconnect();
  clearTimeout(deadline);
  console.log("actioncable client: all frames received");
}

main().catch((e) => fail(e.stack || String(e)));
