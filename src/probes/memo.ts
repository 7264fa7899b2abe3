/**
 * `build(key)` once per key object, then looked up: for what a check derives from its
 * config (a compiled pattern, an encoded question), so the check path only reads it.
 * Config objects live as long as their Plan; a WeakMap lets them go with it.
 */
export function oncePer<K extends object, V>(build: (key: K) => V): (key: K) => V {
  const cache = new WeakMap<K, V>();
  return (key) => {
    let value = cache.get(key);
    if (value === undefined) {
      value = build(key);
      cache.set(key, value);
    }
    return value;
  };
}
