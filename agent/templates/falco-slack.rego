# Renders a Falco alert (Falco's JSON output)
# as Slack Block Kit blocks (a JSON array; the Slack action adds the title).
package hooker.falco.slack

import data.hooker.lib.render
import data.hooker.lib.falco
import rego.v1

title := falco.title

result := render.slack_blocks(falco.card, 20)

result_severity := falco.level

result_finding := falco.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := falco.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.slack"
