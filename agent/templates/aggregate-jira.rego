# Aggregation for Jira templates: each message's title as a heading, then its wiki markup,
# messages separated by horizontal rules.
package hooker.aggregate.jira

import data.hooker.lib.render
import rego.v1

title := render.aggregate_title(input)

result := concat("\n\n----\n\n", [sprintf("h2. %s\n\n%s", [render.jira(render.field(item, "title")), render.text(object.get(item, "description", ""))]) |
	some item in render.aggregate_items(input)
])

result_severity := render.aggregate_level(input)
