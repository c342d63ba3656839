# Renders a Tracee detection or event (any of the three JSON shapes)
# as a JSON object for the OpsGenie and PagerDuty actions (description, priority, alias, ...).
package hooker.tracee.opsgenie

import data.hooker.lib.render
import data.hooker.lib.tracee
import rego.v1

title := tracee.title

result := render.alert(tracee.card, 20)

result_severity := tracee.level

result_finding := tracee.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.alert"
