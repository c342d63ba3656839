# Renders a trivy-operator VulnerabilityReport (bare, or in its {verb, operatorObject} wrapper)
# as plain text: the title, then one fact per line.
package hooker.trivyoperator.text

import data.hooker.lib.render
import data.hooker.lib.trivyoperator
import rego.v1

title := trivyoperator.title

result := render.plain(trivyoperator.card, 50)

result_severity := trivyoperator.level

result_finding := trivyoperator.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivyoperator.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.text"
