# Aggregation for text templates: one message listing every aggregated title and body.
package hooker.aggregate.text

import data.hooker.lib.render
import rego.v1

title := sprintf("%d events: %s", [count(input), input[0].title])

result := concat("\n\n", [text |
	some item in input
	body := as_text(item.description)
	text := with_title(item.title, body)
])

# Text templates may start their body with the title already.
with_title(title, body) := body if {
	is_string(title)
	startswith(body, title)
} else := sprintf("%v\n%s", [title, body])

as_text(d) := d if is_string(d)
else := json.marshal(d)

result_severity := render.aggregate_level(input)
