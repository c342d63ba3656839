# Renders a Trivy JSON report (ArtifactName, Results[].Vulnerabilities)
# as Slack Block Kit blocks (a JSON array; the Slack action adds the title). Postee's `postee.vuls.trivy.slack`.
package hooker.trivy.slack

import data.hooker.lib.render
import data.hooker.lib.trivy
import rego.v1

title := trivy.card.title

result := render.slack_blocks(trivy.card, 20)

url := render.card_url(trivy.card)

result_severity := trivy.level

result_finding := trivy.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivy.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.slack"
