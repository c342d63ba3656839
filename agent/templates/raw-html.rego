# The event as pretty JSON inside HTML (Postee's postee.rawmessage.html).
package hooker.rawmessage.html

import rego.v1

title := "Raw Message Received"

result := sprintf("<pre><code>%s</code></pre>", [escaped])

escaped := replace(replace(replace(jsonformat(object.remove(input, ["postee", "hooker"])), "&", "&amp;"), "<", "&lt;"), ">", "&gt;")
