# Renders a Trivy JSON report (ArtifactName, Results[].Vulnerabilities)
# as Jira wiki markup for an issue description. Postee's `postee.trivy.jira`.
package hooker.trivy.jira

import data.hooker.lib.render
import data.hooker.lib.trivy
import rego.v1

title := trivy.card.title

result := render.jira_body(trivy.card, 50)

url := render.card_url(trivy.card)

result_severity := trivy.level

result_finding := trivy.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivy.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.jira"
