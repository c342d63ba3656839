# Renders a Trivy JSON report (ArtifactName, Results[].Vulnerabilities)
# as a JSON object for the PagerDuty and OpsGenie actions (summary, severity, dedup_key, ...).
package hooker.trivy.pagerduty

import data.hooker.lib.render
import data.hooker.lib.trivy
import rego.v1

title := trivy.card.title

result := render.alert(trivy.card, 20)

url := render.card_url(trivy.card)

result_severity := trivy.level

result_finding := trivy.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivy.finding

# PagerDuty's payload fields, when the event says them.
result_source := v if {
	v := trivy.card.source
	v != ""
}

result_component := v if {
	v := trivy.card.component
	v != ""
}

result_group := v if {
	v := trivy.card.group
	v != ""
}

result_class := v if {
	v := trivy.card.class
	v != ""
}

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.alert"
