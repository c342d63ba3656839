# Small helpers for templates (Hooker's own take on the helpers Postee templates import).
package hooker.lib.common

import rego.v1

# a when flag is true, else b.
by_flag(a, b, flag) := a if flag == true
else := b

# obj[key] unless it is missing, null or "", else default_value.
with_default(obj, key, default_value) := obj[key] if {
	obj[key] != null
	obj[key] != ""
} else := default_value

# Keeps n within [lo, hi].
clamp(n, lo, hi) := max([lo, min([n, hi])])

# Flattens one level of nesting.
flat_array(a) := [x | some inner in a; some x in inner]
