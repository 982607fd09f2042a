"""What a database login may do beyond the grants it was given."""
from contextlib import closing

import psycopg2

# Objects the login owns, or may act as the owner of through a role it belongs
# to: whoever owns a table, function or schema may rewrite or drop it, and a
# superuser is a member of every role.
LOGIN_POWERS = """
    SELECT current_user AS name,
           r.rolsuper AS superuser,
           ARRAY(SELECT 'table ' || c.oid::regclass::text
                   FROM pg_class c
                  WHERE c.relkind IN ('r', 'p')
                    AND pg_has_role(c.relowner, 'MEMBER')
                 UNION ALL
                 SELECT 'function ' || p.oid::regprocedure::text
                   FROM pg_proc p
                  WHERE pg_has_role(p.proowner, 'MEMBER')
                 UNION ALL
                 SELECT 'schema ' || quote_ident(n.nspname)
                   FROM pg_namespace n
                  WHERE pg_has_role(n.nspowner, 'MEMBER')
                  LIMIT 3) AS owns
      FROM pg_roles r
     WHERE r.rolname = current_user
"""


def login_powers(dsn, connect_timeout):
    """(name, superuser, owns) of the login `dsn` names: its role name, whether
    it is a superuser, and up to three objects it owns. Raises
    psycopg2.OperationalError when the server cannot be reached."""
    with closing(psycopg2.connect(dsn, connect_timeout=connect_timeout, application_name="qmarket")) as conn:
        with conn.cursor() as cur:
            cur.execute(LOGIN_POWERS)
            return cur.fetchone()
