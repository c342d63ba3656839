# Aggregation for Slack templates: each message's title as a bold section, then its blocks,
# messages separated by dividers (the Slack action splits what exceeds one message's blocks).
package hooker.aggregate.slack

import data.hooker.lib.render
import rego.v1

title := render.aggregate_title(input)

result := [block |
	some i, item in render.aggregate_items(input)
	header := {"type": "section", "text": {"type": "mrkdwn", "text": render.clip(sprintf("*%s*", [render.slack(render.field(item, "title"))]), 3000)}}
	divider := [{"type": "divider"} | i > 0]
	some block in array.concat(array.concat(divider, [header]), as_blocks(object.get(item, "description", "")))
]

as_blocks(d) := [b | some b in d; is_object(b)] if is_array(d)
else := [] if render.text(d) == ""
else := [{"type": "section", "text": {"type": "mrkdwn", "text": render.clip(render.slack(render.text(d)), 3000)}}]

result_severity := render.aggregate_level(input)
