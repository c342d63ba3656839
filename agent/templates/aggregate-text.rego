# Aggregation for text templates: one message listing every aggregated title and body.
package hooker.aggregate.text

import rego.v1

title := sprintf("%d events: %s", [count(input), input[0].title])

result := concat("\n\n", [sprintf("%s\n%s", [item.title, body]) |
	some item in input
	body := as_text(item.description)
])

as_text(d) := d if is_string(d)
else := json.marshal(d)
