/* GCC 12 for SH: the test of a pointer just loaded from memory is deleted, so
 * the branch below reads a stale T bit. Correct code has a `tst` before `bt`/`bf`. */
struct node { struct node *next; };
void on_some(void);
void on_none(void);

void pick(struct node *n)
{
	if (n->next)
		on_some();
	else
		on_none();
}
