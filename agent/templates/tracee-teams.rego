# Renders a Tracee detection or event (any of the three JSON shapes)
# as HTML for a Microsoft Teams message (the subset Teams renders).
package hooker.tracee.teams

import data.hooker.lib.render
import data.hooker.lib.tracee
import rego.v1

title := tracee.title

result := render.teams_body(tracee.card, 30)

result_severity := tracee.level

result_finding := tracee.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := tracee.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.html"
