// softkey's WebAuthn bridge, page side (transports/webauthn_bridge.py is the other side).
//
// Runs in every document of a browser context before the page's own scripts. It replaces
// navigator.credentials.create/get for publicKey requests (and the PublicKeyCredential static
// feature queries) with a call through a Playwright binding to Python, where python-fido2's
// client runs the ceremony against a softkey. The page gets PublicKeyCredential-shaped objects
// (instanceof PublicKeyCredential holds) and the DOMExceptions a browser rejects with.
// Requests without publicKey (password, federated) go to the browser as before.
(() => {
  "use strict";
  const BINDING = "__SOFTKEY_BINDING__";
  const INSTALLED = Symbol.for("softkey.webauthn.bridge");

  // WebAuthn is [SecureContext] (L3 §5.1): where the browser offers no API, neither do we.
  if (!globalThis.isSecureContext || typeof navigator === "undefined" ||
      !navigator.credentials || typeof PublicKeyCredential === "undefined") {
    return;
  }
  const Container = Object.getPrototypeOf(navigator.credentials);
  if (Container[INSTALLED]) return;
  Object.defineProperty(Container, INSTALLED, { value: true });

  const native = { create: Container.create, get: Container.get };
  const binding = globalThis[BINDING];

  // -- bytes ---------------------------------------------------------------------------------

  function bytesOf(value) {
    const tag = Object.prototype.toString.call(value);
    if (tag === "[object ArrayBuffer]") return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) {
      return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    }
    return null;
  }

  function b64url(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function buffer(text) {
    const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    const raw = atob(padded);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }

  // -- options -> WebAuthn JSON (L3 §5.1.10) ---------------------------------------------------

  // Members whose IDL type is BufferSource: anything else there is a TypeError, as the
  // browser's WebIDL conversion would throw (a base64 string passed as a challenge is a common
  // site bug, and must not be silently decoded). "*" is every element or map value.
  const BUFFER_MEMBERS = {
    create: [
      "challenge", "user.id", "excludeCredentials.*.id",
      "extensions.prf.eval.first", "extensions.prf.eval.second", "extensions.credBlob",
    ],
    get: [
      "challenge", "allowCredentials.*.id",
      "extensions.prf.eval.first", "extensions.prf.eval.second",
      "extensions.prf.evalByCredential.*.first", "extensions.prf.evalByCredential.*.second",
      "extensions.largeBlob.write",
    ],
  };

  function checkBuffers(options, paths, method) {
    const visit = (value, parts, where) => {
      if (value === undefined || value === null) return;
      if (parts.length === 0) {
        if (!bytesOf(value)) {
          throw new TypeError(`Failed to execute '${method}' on 'CredentialsContainer': ` +
            `'${where}' is not of type '(ArrayBuffer or ArrayBufferView)'.`);
        }
        return;
      }
      const [head, ...rest] = parts;
      if (head === "*") {
        if (typeof value !== "object") return;
        for (const [key, item] of Object.entries(value)) visit(item, rest, `${where}.${key}`);
      } else if (typeof value === "object") {
        visit(value[head], rest, where ? `${where}.${head}` : head);
      }
    };
    for (const path of paths) visit(options, path.split("."), "");
  }

  function toJSONValue(value, depth) {
    if (depth > 32) throw new TypeError("publicKey options nest too deeply");
    const bytes = bytesOf(value);
    if (bytes) return b64url(bytes);
    if (Array.isArray(value)) return value.map((item) => toJSONValue(item, depth + 1));
    if (value !== null && typeof value === "object") {
      const out = {};
      for (const [key, item] of Object.entries(value)) {
        if (item !== undefined && typeof item !== "function") {
          out[key] = toJSONValue(item, depth + 1);
        }
      }
      return out;
    }
    return value;
  }

  // -- results -> PublicKeyCredential-shaped objects ---------------------------------------------

  function define(target, members) {
    for (const [name, value] of Object.entries(members)) {
      Object.defineProperty(target, name, { value, configurable: true });
    }
    return target;
  }

  // Client extension outputs that are ArrayBuffers in the API and base64url in toJSON().
  const BUFFER_OUTPUTS = [
    ["prf", "results", "first"], ["prf", "results", "second"],
    ["largeBlob", "blob"], ["getCredBlob"], ["hmacGetSecret", "output1"],
    ["hmacGetSecret", "output2"],
  ];

  function extensionResults(json) {
    const out = JSON.parse(JSON.stringify(json || {}));
    for (const path of BUFFER_OUTPUTS) {
      let parent = out;
      for (const key of path.slice(0, -1)) parent = parent && parent[key];
      const last = path[path.length - 1];
      if (parent && typeof parent[last] === "string") parent[last] = buffer(parent[last]);
    }
    return out;
  }

  function attestationResponse(json) {
    const response = Object.create(AuthenticatorAttestationResponse.prototype);
    return define(response, {
      clientDataJSON: buffer(json.clientDataJSON),
      attestationObject: buffer(json.attestationObject),
      getTransports: () => [...json.transports],
      getAuthenticatorData: () => buffer(json.authenticatorData),
      getPublicKey: () => (json.publicKey ? buffer(json.publicKey) : null),
      getPublicKeyAlgorithm: () => json.publicKeyAlgorithm,
    });
  }

  function assertionResponse(json) {
    const response = Object.create(AuthenticatorAssertionResponse.prototype);
    return define(response, {
      clientDataJSON: buffer(json.clientDataJSON),
      authenticatorData: buffer(json.authenticatorData),
      signature: buffer(json.signature),
      userHandle: json.userHandle ? buffer(json.userHandle) : null,
      attestationObject: null,
    });
  }

  function credential(json, method) {
    const response = method === "create" ?
      attestationResponse(json.response) : assertionResponse(json.response);
    const results = extensionResults(json.clientExtensionResults);
    const copy = () => JSON.parse(JSON.stringify(json));
    return define(Object.create(PublicKeyCredential.prototype), {
      id: json.id,
      rawId: buffer(json.rawId),
      type: "public-key",
      response,
      authenticatorAttachment: json.authenticatorAttachment,
      getClientExtensionResults: () => results,
      toJSON: copy,
    });
  }

  // -- the calls ---------------------------------------------------------------------------------

  function failure(error) {
    if (error.name === "TypeError") return new TypeError(error.message);
    return new DOMException(error.message, error.name);
  }

  function callPython(message) {
    // The binding as it was when the script ran, before page scripts could replace it.
    const call = binding || globalThis[BINDING];
    if (typeof call !== "function") {
      return Promise.reject(new DOMException(
        "softkey's WebAuthn bridge is not connected to this page", "NotAllowedError"));
    }
    return call(JSON.stringify(message)).then((text) => JSON.parse(text));
  }

  // Settles as `work` does, or rejects with the signal's reason when it aborts first (L3
  // §5.6: a browser cancels the authenticator operation then; here the Python side has
  // usually answered already, the answer is dropped).
  function abortable(signal, work) {
    if (!signal) return work;
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      work.then(
        (value) => { signal.removeEventListener("abort", onAbort); resolve(value); },
        (error) => { signal.removeEventListener("abort", onAbort); reject(error); });
    });
  }

  async function ceremony(method, options) {
    const signal = options.signal;
    if (signal && signal.aborted) throw signal.reason;
    const publicKey = options.publicKey;
    if (publicKey === null || typeof publicKey !== "object") {
      throw new TypeError(`Failed to execute '${method}' on 'CredentialsContainer': ` +
        "publicKey must be a dictionary.");
    }
    if (method === "create" && options.mediation === "conditional") {
      // Conditional create (L3 §5.1.3 step 2) is for password managers' passkey upgrades,
      // not for a security key: getClientCapabilities() says conditionalCreate: false.
      throw new DOMException("conditional create is not supported", "NotSupportedError");
    }
    checkBuffers(publicKey, BUFFER_MEMBERS[method], method);
    const message = { op: method, publicKey: toJSONValue(publicKey, 0) };
    if (options.mediation !== undefined) message.mediation = String(options.mediation);
    const answer = await abortable(signal, callPython(message));
    if (answer.error) throw failure(answer.error);
    if (answer.pending) {
      // Conditional mediation with no credential to offer: pending until aborted.
      return new Promise((resolve, reject) => {
        if (!signal) return;
        if (signal.aborted) reject(signal.reason);
        else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
    }
    return credential(answer.credential, method);
  }

  function override(method) {
    return {
      [method](options) {
        if (options === null || typeof options !== "object" || !("publicKey" in options)) {
          return native[method].apply(this, arguments);
        }
        return ceremony(method, options);
      },
    }[method];
  }

  for (const method of ["create", "get"]) {
    Object.defineProperty(Container, method, {
      value: override(method), writable: true, enumerable: true, configurable: true,
    });
  }

  const statics = {
    // softkey is a roaming key; the context has no platform authenticator.
    isUserVerifyingPlatformAuthenticatorAvailable: async () => false,
    isConditionalMediationAvailable: async () => true,
    getClientCapabilities: async () => (await callPython({ op: "capabilities" })).capabilities,
  };
  for (const [name, value] of Object.entries(statics)) {
    Object.defineProperty(PublicKeyCredential, name, {
      value, writable: true, enumerable: true, configurable: true,
    });
  }
})();
