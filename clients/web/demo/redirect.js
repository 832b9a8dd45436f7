// Used by ../index.html: go to the demo, keeping the query (?room=…&bridge=…)
// and fragment, which the meta refresh fallback would drop.
location.replace(new URL('demo/' + location.search + location.hash, location.href).href);
