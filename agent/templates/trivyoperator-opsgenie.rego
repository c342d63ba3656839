# Renders a trivy-operator VulnerabilityReport (bare, or in its {verb, operatorObject} wrapper)
# as a JSON object for the OpsGenie and PagerDuty actions (description, priority, alias, ...).
package hooker.trivyoperator.opsgenie

import data.hooker.lib.render
import data.hooker.lib.trivyoperator
import rego.v1

title := trivyoperator.title

result := render.alert(trivyoperator.card, 20)

result_severity := trivyoperator.level

result_finding := trivyoperator.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivyoperator.finding

# PagerDuty's payload fields, when the event says them.
result_source := v if {
	v := trivyoperator.card.source
	v != ""
}

result_component := v if {
	v := trivyoperator.card.component
	v != ""
}

result_group := v if {
	v := trivyoperator.card.group
	v != ""
}

result_class := v if {
	v := trivyoperator.card.class
	v != ""
}

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.alert"
