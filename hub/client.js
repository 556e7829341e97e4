/*
 * edge hub client, protocol v1 (see hub/PROTOCOL.md in the edge sources).
 *
 * No build step, no dependencies, never touches the DOM. Load it either way:
 *
 *   <script src="/socket/client.js"></script>            -> window.EdgeHub
 *   import { EdgeHub } from "/socket/client.mjs";         (ES module)
 *   import "/socket/client.js";                           -> globalThis.EdgeHub
 *
 *   const hub = new EdgeHub("/socket/", { channels: ["orders"], token: "…" });
 *   hub.on("message", (m) => console.log(m.channel, m.seq, m.data));
 *   hub.on("gap", (g) => reloadState(g.channel));   // messages were missed
 *   hub.publish("orders", { hello: 1 });            // queued until open
 *
 * Events: open, close {code, reason, wasClean}, message {channel, seq, data},
 * gap {channel, seq, epoch, reason}, error {type, …}, subscribed,
 * disconnect {code, reason, reconnect} (the server's order; with
 * reconnect false the client stops for good), unsubscribed {channel,
 * reason} (reason "server" or "forbidden" when the server ended it),
 * refreshed {exp}, and any other server reply type (published).
 *
 * Transports: WebSocket first. When sseAfter attempts in a row fail to
 * open (a proxy that breaks upgrades), the client falls back to
 * Server-Sent Events (GET <route>sse, publishes as POST <route>publish),
 * and tries WebSocket again every wsRetry ms. The "open" event says which
 * ({transport: "websocket" | "sse"}).
 *
 * Tokens: with token as a function, a JWT is refreshed in place
 * refreshMargin ms before its exp (the function is called again and the
 * new token sent as {"type":"refresh"}), so a long-lived page never drops.
 */
(function (root) {
  "use strict";
  if (root.EdgeHub) {
    return; // loaded twice
  }

  var OPEN = 1;
  var STABLE = 5000; // a connection open this long resets the backoff
  var DEFAULTS = {
    channels: [],
    token: null, // a string, or a function returning a string or a Promise
    tokenIn: "protocol", // "protocol" (Sec-WebSocket-Protocol) or "query"
    queryParam: "token",
    minDelay: 500, // reconnect backoff, milliseconds
    maxDelay: 30000,
    pingInterval: 20000, // JSON ping; browsers cannot send ping frames
    pongTimeout: 10000, // no frame within pingInterval+pongTimeout: reconnect
    maxQueue: 1000, // sends kept while not open; the oldest is dropped beyond
    refreshMargin: 30000, // refresh a function-given JWT this long before exp
    sseAfter: 3, // WebSocket attempts that never opened before falling back to SSE; 0: never
    wsRetry: 300000, // while on SSE, try WebSocket again this often
    EventSource: null, // an EventSource class (default: the browser's)
    WebSocket: null, // a WebSocket class (Node: the "ws" package)
  };

  function EdgeHub(url, options) {
    if (!(this instanceof EdgeHub)) {
      return new EdgeHub(url, options);
    }
    var opts = {};
    var k;
    for (k in DEFAULTS) opts[k] = DEFAULTS[k];
    for (k in options || {}) opts[k] = options[k];
    this.url = url;
    this.options = opts;
    this._WS = opts.WebSocket || root.WebSocket;
    if (!this._WS) {
      throw new Error("EdgeHub: no WebSocket class; pass options.WebSocket");
    }
    this._handlers = {};
    // channel -> {seq, epoch}: the last position seen, null until known.
    this._channels = new Map();
    this._queue = [];
    this._attempt = 0;
    this._closed = false;
    this._ws = null;
    this._ready = false;
    this._epoch = null;
    this._timer = null;
    this._heartbeat = null;
    this._refreshTimer = null;
    this._failures = 0; // WebSocket attempts in a row that never opened
    this._sse = null; // the EventSource while on the SSE transport
    this._token = null; // the token of the current connection
    this._wsRetryTimer = null;
    this._lastSeen = 0;
    this._openedAt = 0;
    this._urlChannels = new Set(); // channels named in the current socket's URL
    for (var i = 0; i < opts.channels.length; i++) {
      this._channels.set(opts.channels[i], { seq: null, epoch: null });
    }
    this._connect();
  }

  // on registers fn for an event type and returns a function that removes it.
  EdgeHub.prototype.on = function (type, fn) {
    (this._handlers[type] = this._handlers[type] || []).push(fn);
    var self = this;
    return function () {
      self.off(type, fn);
    };
  };

  EdgeHub.prototype.off = function (type, fn) {
    var list = this._handlers[type] || [];
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  };

  EdgeHub.prototype._emit = function (type, ev) {
    var list = (this._handlers[type] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].call(this, ev);
      } catch (err) {
        // A failing handler must not break the connection; report it
        // without swallowing it.
        setTimeout(function () {
          throw err;
        });
      }
    }
  };

  // state is "open", "connecting" or "closed" (after close()).
  Object.defineProperty(EdgeHub.prototype, "state", {
    get: function () {
      if (this._closed) return "closed";
      return this._ready ? "open" : "connecting";
    },
  });

  // position returns {seq, epoch} for a subscribed channel, or undefined.
  EdgeHub.prototype.position = function (channel) {
    var st = this._channels.get(channel);
    return st ? { seq: st.seq, epoch: st.epoch } : undefined;
  };

  EdgeHub.prototype.subscribe = function (channel) {
    if (this._channels.has(channel)) return;
    this._channels.set(channel, { seq: null, epoch: null });
    if (this._sse) this._restartSSE();
    else if (this._ready) this._rawSend({ type: "subscribe", channel: channel });
  };

  EdgeHub.prototype.unsubscribe = function (channel) {
    if (!this._channels.delete(channel)) return;
    if (this._sse) this._restartSSE();
    else if (this._ready) this._rawSend({ type: "unsubscribe", channel: channel });
  };

  // _restartSSE opens a new stream for the changed channel list (an SSE
  // stream's channels are fixed by its URL), resuming where it was.
  EdgeHub.prototype._restartSSE = function () {
    var self = this;
    clearTimeout(this._timer);
    this._timer = setTimeout(function () {
      if (self._sse) self._openSSE(self._token);
    }, 0);
  };

  EdgeHub.prototype.publish = function (channel, data, id) {
    var msg = { type: "publish", channel: channel, data: data };
    if (id !== undefined) msg.id = id;
    return this.send(msg);
  };

  // send sends a protocol message now when open, else queues it until the
  // connection is open (never "Still in CONNECTING state"). It returns true
  // when sent now.
  EdgeHub.prototype.send = function (msg) {
    if (this._closed) return false;
    if (this._ready && this._rawSend(msg)) return true;
    if (this._queue.length >= this.options.maxQueue) {
      var dropped = this._queue.shift();
      this._emit("error", { type: "queue_overflow", dropped: dropped });
    }
    this._queue.push(msg);
    return false;
  };

  // close closes the connection for good.
  EdgeHub.prototype.close = function () {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._wsRetryTimer);
    this._queue = [];
    if (this._ws || this._sse) {
      this._drop(1000, "closed by client", true);
    }
  };

  EdgeHub.prototype._rawSend = function (msg) {
    if (this._sse) return this._ssePublish(msg);
    var ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(msg));
      return true;
    } catch (err) {
      this._emit("error", { type: "send", error: err });
      return false;
    }
  };

  EdgeHub.prototype._buildURL = function (token) {
    var u;
    if (/^wss?:/i.test(this.url)) {
      u = new URL(this.url);
    } else {
      var base = root.location ? root.location.href : undefined;
      u = new URL(this.url, base);
    }
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    // Channels with a known position are resubscribed by message, with
    // since; the others are named in the URL and subscribed at connect.
    var named = new Set();
    this._channels.forEach(function (st, name) {
      if (st.seq === null) {
        u.searchParams.append("channel", name);
        named.add(name);
      }
    });
    this._urlChannels = named;
    if (token && this.options.tokenIn === "query") {
      u.searchParams.set(this.options.queryParam, token);
    }
    return u.toString();
  };

  EdgeHub.prototype._connect = function () {
    var self = this;
    if (this._closed) return;
    var tok = this.options.token;
    var p;
    try {
      p = Promise.resolve(typeof tok === "function" ? tok() : tok);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      function (token) {
        var ES = self.options.EventSource || root.EventSource;
        var sse = self.options.sseAfter > 0 && self._failures >= self.options.sseAfter && ES;
        if (sse) self._openSSE(token);
        else self._open(token);
      },
      function (err) {
        self._emit("error", { type: "token", error: err });
        self._reconnect();
      }
    );
  };

  EdgeHub.prototype._open = function (token) {
    var self = this;
    if (this._closed) return;
    var protocols = ["edge.v1"];
    if (token && this.options.tokenIn === "protocol") {
      protocols.push("bearer." + token);
    }
    var ws;
    try {
      ws = new this._WS(this._buildURL(token), protocols);
    } catch (err) {
      this._emit("error", { type: "connect", error: err });
      this._reconnect();
      return;
    }
    this._ws = ws;
    this._token = token;
    this._ready = false;
    ws.onopen = function () {
      if (ws !== self._ws) return;
      self._ready = true;
      self._failures = 0;
      self._openedAt = Date.now();
      self._resubscribe();
      var queued = self._queue;
      self._queue = [];
      for (var i = 0; i < queued.length; i++) self.send(queued[i]);
      self._startHeartbeat(ws);
      self._scheduleRefresh(jwtExp(token));
      self._emit("open", { transport: "websocket" });
    };
    ws.onmessage = function (ev) {
      if (ws !== self._ws) return;
      self._onMessage(ev.data);
    };
    ws.onclose = function (ev) {
      if (ws !== self._ws) return;
      self._drop(ev.code, ev.reason, ev.wasClean);
    };
    ws.onerror = function () {
      if (ws !== self._ws) return;
      self._emit("error", { type: "socket" });
    };
  };

  // _resubscribe brings the server's subscriptions in line with ours once
  // a socket opens: since for known positions, and whatever changed while
  // the socket was connecting.
  EdgeHub.prototype._resubscribe = function () {
    var self = this;
    this._channels.forEach(function (st, name) {
      if (st.seq !== null) {
        var msg = { type: "subscribe", channel: name, since: st.seq };
        if (st.epoch) msg.epoch = st.epoch;
        self._rawSend(msg);
      } else if (!self._urlChannels.has(name)) {
        self._rawSend({ type: "subscribe", channel: name });
      }
    });
    this._urlChannels.forEach(function (name) {
      if (!self._channels.has(name)) {
        self._rawSend({ type: "unsubscribe", channel: name });
      }
    });
  };

  EdgeHub.prototype._onMessage = function (data) {
    this._lastSeen = Date.now();
    if (typeof data !== "string") {
      data = String(data); // Node ws may hand over a Buffer
    }
    var msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      this._emit("error", { type: "parse", data: data });
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    var st;
    if (msg.type === undefined && typeof msg.channel === "string") {
      st = this._channels.get(msg.channel);
      if (!st) return; // unsubscribed meanwhile
      if (st.seq !== null && msg.seq <= st.seq && st.epoch === this._epoch) {
        // Seen already, in this epoch: a resume position shared by
        // several channels (SSE's Last-Event-ID) can replay one again.
        return;
      }
      st.seq = msg.seq;
      st.epoch = this._epoch;
      this._emit("message", msg);
      return;
    }
    switch (msg.type) {
      case "welcome":
        this._epoch = msg.epoch;
        break;
      case "pong":
        break;
      case "subscribed":
        st = this._channels.get(msg.channel);
        // A fresh subscription starts at the channel's position. With
        // since, the position moves only as replayed messages arrive, so
        // that a drop during the replay loses nothing.
        if (st && st.seq === null) {
          st.seq = msg.seq;
          st.epoch = msg.epoch;
        }
        this._emit("subscribed", msg);
        break;
      case "gap":
        st = this._channels.get(msg.channel);
        if (st) {
          st.seq = msg.seq;
          st.epoch = msg.epoch;
        }
        this._emit("gap", msg);
        break;
      case "disconnect":
        // The server closes next; its order says whether to come back.
        if (msg.reconnect === false) this._stopAfterClose = true;
        this._emit("disconnect", msg);
        break;
      case "unsubscribed":
        // With a reason the server ended it: do not resubscribe.
        if (msg.reason) this._channels.delete(msg.channel);
        this._emit("unsubscribed", msg);
        break;
      case "refreshed":
        this._scheduleRefresh(msg.exp);
        this._emit("refreshed", msg);
        break;
      case "error":
        this._emit("error", {
          type: "server",
          code: msg.code,
          message: msg.message,
          channel: msg.channel,
          id: msg.id,
        });
        break;
      default:
        this._emit(msg.type, msg);
    }
  };

  EdgeHub.prototype._startHeartbeat = function (ws) {
    var self = this;
    var o = this.options;
    this._lastSeen = Date.now();
    clearInterval(this._heartbeat);
    this._heartbeat = setInterval(function () {
      if (ws !== self._ws && ws !== self._sse) return;
      if (Date.now() - self._lastSeen > o.pingInterval + o.pongTimeout) {
        // Nothing heard for too long: the connection is dead even if the
        // socket has not noticed.
        self._drop(4000, "heartbeat timeout", false);
        return;
      }
      // On SSE the server's ping events are the heartbeat.
      if (!self._sse) self._rawSend({ type: "ping" });
    }, o.pingInterval);
  };

  // _drop forgets the current socket, reports close and schedules a
  // reconnect unless close() was called.
  EdgeHub.prototype._drop = function (code, reason, wasClean) {
    var ws = this._ws;
    var wasOpen = this._ready;
    this._ws = null;
    this._ready = false;
    clearInterval(this._heartbeat);
    clearTimeout(this._wsRetryTimer);
    if (this._sse) {
      this._sse.onopen = this._sse.onmessage = this._sse.onerror = null;
      this._sse.close();
      this._sse = null;
    } else if (!wasOpen) {
      this._failures++;
    }
    if (ws) {
      var noop = function () {};
      // Keep handlers (no-ops): Node's ws throws on an unhandled error.
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
      try {
        if (ws.readyState <= OPEN) {
          if (typeof ws.terminate === "function" && !wasClean) ws.terminate();
          else ws.close(code === 1000 ? 1000 : undefined);
        }
      } catch (err) {
        // already closing
      }
    }
    if (wasOpen && Date.now() - this._openedAt > STABLE) {
      this._attempt = 0; // a connection that lasted starts the backoff over
    }
    clearTimeout(this._refreshTimer);
    this._emit("close", { code: code, reason: reason || "", wasClean: !!wasClean });
    if (this._stopAfterClose) {
      this._closed = true;
      this._queue = [];
      return;
    }
    this._reconnect();
  };

  // _scheduleRefresh arranges for a fresh token to be sent refreshMargin
  // before exp (unix seconds), when the token comes from a function.
  EdgeHub.prototype._scheduleRefresh = function (exp) {
    var self = this;
    clearTimeout(this._refreshTimer);
    if (!exp || typeof this.options.token !== "function") return;
    var wait = Math.max(0, exp * 1000 - this.options.refreshMargin - Date.now());
    var ws = this._ws;
    this._refreshTimer = setTimeout(function () {
      if (ws !== self._ws || !self._ready) return;
      var p;
      try {
        p = Promise.resolve(self.options.token());
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        function (token) {
          if (ws === self._ws && token) self._rawSend({ type: "refresh", token: token });
        },
        function (err) {
          self._emit("error", { type: "token", error: err });
        }
      );
    }, wait);
  };

  // _httpURL returns the route's URL over http(s) with suffix appended to
  // its path (sse, publish).
  EdgeHub.prototype._httpURL = function (suffix) {
    var base = root.location ? root.location.href : undefined;
    var u = new URL(this.url, base);
    if (u.protocol === "ws:") u.protocol = "http:";
    if (u.protocol === "wss:") u.protocol = "https:";
    if (u.pathname.slice(-1) !== "/") u.pathname += "/";
    u.pathname += suffix;
    u.search = "";
    return u;
  };

  // _openSSE connects over Server-Sent Events: the channels in the URL,
  // the token in the query (EventSource cannot send headers; a cookie
  // works too), and where to resume as last_event_id.
  EdgeHub.prototype._openSSE = function (token) {
    var self = this;
    if (this._closed) return;
    if (this._sse) {
      this._sse.onopen = this._sse.onmessage = this._sse.onerror = null;
      this._sse.close();
    }
    var u = this._httpURL("sse");
    var last = null;
    this._channels.forEach(function (st, name) {
      u.searchParams.append("channel", name);
      if (st.seq !== null && st.epoch && (!last || st.seq > last.seq)) last = { name: name, seq: st.seq, epoch: st.epoch };
    });
    if (last) u.searchParams.set("last_event_id", last.name + ":" + last.seq + "@" + last.epoch);
    if (token) u.searchParams.set(this.options.queryParam, token);
    this._token = token;
    this._ready = false;
    var ES = this.options.EventSource || root.EventSource;
    var es = new ES(u.toString(), { withCredentials: false });
    this._sse = es;
    es.onopen = function () {
      if (es !== self._sse) return;
      self._ready = true;
      self._openedAt = Date.now();
      var queued = self._queue;
      self._queue = [];
      for (var i = 0; i < queued.length; i++) self.send(queued[i]);
      self._startHeartbeat(es);
      self._ws = null;
      clearTimeout(self._wsRetryTimer);
      self._wsRetryTimer = setTimeout(function () {
        // Try WebSocket again: the network may have changed.
        if (es !== self._sse) return;
        self._failures = 0;
        self._drop(1000, "trying WebSocket again", true);
      }, self.options.wsRetry);
      self._emit("open", { transport: "sse" });
    };
    es.onmessage = function (ev) {
      if (es !== self._sse) return;
      self._onMessage(ev.data);
    };
    es.addEventListener("ping", function () {
      if (es === self._sse) self._lastSeen = Date.now();
    });
    es.addEventListener("close", function (ev) {
      if (es !== self._sse) return;
      var c = {};
      try {
        c = JSON.parse(ev.data);
      } catch (err) {
        // keep the defaults
      }
      self._drop(c.code || 1005, c.reason || "", true);
    });
    es.onerror = function () {
      // EventSource would retry by itself, with the same URL and token;
      // this client retries with its own backoff, a fresh token and
      // where it left off.
      if (es !== self._sse) return;
      self._drop(1006, "sse stream failed", false);
    };
  };

  // _ssePublish sends a publish of the SSE transport as POST <route>publish
  // and reports the answer as the WebSocket would (published or error).
  EdgeHub.prototype._ssePublish = function (msg) {
    var self = this;
    if (msg.type !== "publish") return true; // nothing else travels this way
    var headers = { "Content-Type": "application/json" };
    if (this._token) headers.Authorization = "Bearer " + this._token;
    fetch(this._httpURL("publish").toString(), {
      method: "POST",
      headers: headers,
      body: JSON.stringify({ channel: msg.channel, data: msg.data, id: msg.id }),
      credentials: "same-origin",
    })
      .then(function (res) {
        return res.json();
      })
      .then(
        function (reply) {
          if (reply.type === "published" && msg.id === undefined) return;
          self._onMessage(JSON.stringify(reply));
        },
        function (err) {
          self._emit("error", { type: "send", error: err });
        }
      );
    return true;
  };

  // jwtExp returns a JWT's exp claim, or 0 for anything else.
  function jwtExp(token) {
    if (typeof token !== "string") return 0;
    var parts = token.split(".");
    if (parts.length !== 3) return 0;
    try {
      var b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      var claims = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
      return typeof claims.exp === "number" ? claims.exp : 0;
    } catch (err) {
      return 0;
    }
  }

  EdgeHub.prototype._reconnect = function () {
    var self = this;
    if (this._closed) return;
    clearTimeout(this._timer);
    var o = this.options;
    var base = Math.min(o.maxDelay, o.minDelay * Math.pow(2, this._attempt));
    this._attempt = Math.min(this._attempt + 1, 30);
    // Full jitter over the upper half: spreads a thundering herd of
    // clients reconnecting after a restart.
    var delay = base / 2 + Math.random() * (base / 2);
    this._emit("reconnecting", { delay: delay, attempt: this._attempt });
    this._timer = setTimeout(function () {
      self._connect();
    }, delay);
  };

  root.EdgeHub = EdgeHub;
  if (typeof module === "object" && module && module.exports) {
    module.exports = EdgeHub;
    module.exports.EdgeHub = EdgeHub;
  }
})(typeof globalThis !== "undefined" ? globalThis : this);
