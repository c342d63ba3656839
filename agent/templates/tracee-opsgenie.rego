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

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := tracee.finding

# PagerDuty's payload fields, when the event says them.
result_source := v if {
	v := tracee.card.source
	v != ""
}

result_component := v if {
	v := tracee.card.component
	v != ""
}

result_group := v if {
	v := tracee.card.group
	v != ""
}

result_class := v if {
	v := tracee.card.class
	v != ""
}

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.alert"
