// Outbox rows in IndexedDB, one row per op (rewriting one big blob is slow and loses everything at
// once when it fails). Each user gets a database of their own, so a shared phone never sends one
// person's queued edits as another's.

const STORE = "ops";

/**
 * @param {string} name the database's name, e.g. "wedsync-outbox-<user id>"
 * @returns {Promise<import("./outbox.js").OutboxStorage>}
 */
export async function openIndexedDbStorage(name) {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "key" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  /** @param {IDBTransactionMode} mode @param {(store: IDBObjectStore) => IDBRequest} action */
  const run = (mode, action) =>
    new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = action(transaction.objectStore(STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  return {
    load: () => run("readonly", (store) => store.getAll()),
    put: async (entry) => {
      await run("readwrite", (store) => store.put(entry));
    },
    remove: async (key) => {
      await run("readwrite", (store) => store.delete(key));
    },
  };
}
