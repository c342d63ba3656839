# Renders a Falco alert (Falco's JSON output)
# as a JSON object for the PagerDuty and OpsGenie actions (summary, severity, dedup_key, ...).
package hooker.falco.pagerduty

import data.hooker.lib.render
import data.hooker.lib.falco
import rego.v1

title := falco.title

result := render.alert(falco.card, 20)

result_severity := falco.level

result_finding := falco.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := falco.finding

# PagerDuty's payload fields, when the event says them.
result_source := v if {
	v := falco.card.source
	v != ""
}

result_component := v if {
	v := falco.card.component
	v != ""
}

result_group := v if {
	v := falco.card.group
	v != ""
}

result_class := v if {
	v := falco.card.class
	v != ""
}

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.alert"
