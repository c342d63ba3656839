# Aggregates Slack block lists: each message's title as a header section, then its blocks.
package hooker.vuls.slack.aggregation

import rego.v1

title := sprintf("%d vulnerability scan reports", [count(input)])

result := [block |
	some item in input
	blocks := array.concat([{"type": "section", "text": {"type": "mrkdwn", "text": sprintf("*%s*", [item.title])}}], as_blocks(item.description))
	some block in blocks
]

as_blocks(d) := d if is_array(d)
else := [{"type": "section", "text": {"type": "mrkdwn", "text": substring(json.marshal(d), 0, 3000)}}]
