# Renders a Tracee detection or event (any of the three JSON shapes)
# as Slack Block Kit blocks (a JSON array; the Slack action adds the title). Postee's `postee.tracee.slack`.
package hooker.tracee.slack

import data.hooker.lib.render
import data.hooker.lib.tracee
import rego.v1

title := tracee.title

result := render.slack_blocks(tracee.card, 20)

result_severity := tracee.level

result_finding := tracee.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := tracee.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.slack"
