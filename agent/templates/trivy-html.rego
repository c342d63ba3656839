# Renders a Trivy JSON report (ArtifactName, Results[].Vulnerabilities)
# as HTML for e-mail and other HTML readers.
package hooker.trivy.html

import data.hooker.lib.render
import data.hooker.lib.trivy
import rego.v1

title := trivy.card.title

result := render.html_body(trivy.card, 100)

url := render.card_url(trivy.card)

result_severity := trivy.level

result_finding := trivy.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivy.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.html"
