module greenruntime.local/anchors

go 1.19
