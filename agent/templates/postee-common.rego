# The helpers Postee's templates import from its `rego-templates/common/common.rego`
# (`import data.postee.with_default`), with Postee's meaning, so a custom template written for
# Postee renders without copying that file. A `package postee` module in `HOOKER_REGO_TEMPLATES`
# replaces this one.
package postee

import rego.v1

# a when flag holds (anything but false), b when it is false; undefined when flag is.
by_flag(a, _, flag) := a if flag

by_flag(_, b, flag) := b if flag == false

# a for column 1, b for column 2.
duplicate(a, _, col) := a if col == 1

duplicate(_, b, col) := b if col == 2

# The smaller of a and b.
clamp(a, b) := b if a > b

clamp(a, b) := a if a <= b

# The items of the arrays (or objects) in a, one level flattened.
flat_array(a) := [item | some inner in a; some item in inner]

# obj[prop], or default_value when it is missing or false ("" and null are kept).
with_default(obj, prop, default_value) := default_value if not obj[prop]

with_default(obj, prop, _) := obj[prop] if obj[prop]
