# Aggregation for HTML templates (e-mail, Teams): each message's title as a heading, then its body,
# messages separated by rules.
package hooker.aggregate.html

import data.hooker.lib.render
import rego.v1

title := render.aggregate_title(input)

result := concat("<hr>", [sprintf("<h2>%s</h2>%s", [render.html(render.field(item, "title")), render.text(object.get(item, "description", ""))]) |
	some item in render.aggregate_items(input)
])

result_severity := render.aggregate_level(input)
